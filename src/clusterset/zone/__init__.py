"""L1: the clusterset.local zone as pure data, and its compiled wire answers."""
