"""L1: pure, level-based functions from observed state to desired objects and conditions."""
