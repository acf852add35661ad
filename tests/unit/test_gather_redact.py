"""What `clusterset gather` never writes: credentials, whatever shape they come in."""

from __future__ import annotations

import pytest

from clusterset.kube.gather import REDACTED, redact

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6Ik.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50Ii.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"token: {JWT}", JWT),  # a kubeconfig user
        ("    token: s3cr3t-value", "s3cr3t-value"),
        ('{"token": "abc.def-123"}', "abc.def-123"),  # JSON
        ("msg=login token=abc123 user=x", "abc123"),  # logfmt
        ("Authorization: Bearer sha256~AbCdEf0123", "sha256~AbCdEf0123"),
        ("client-key-data: LS0tLS1CRUdJTiBSU0Eg", "LS0tLS1CRUdJTiBSU0Eg"),
        ("password=hunter2", "hunter2"),
        (f"a JWT alone in a log line: {JWT} (end)", JWT),
    ],
)
def test_credentials_are_replaced(text: str, gone: str) -> None:
    out = redact(text)
    assert gone not in out and REDACTED in out, out


@pytest.mark.parametrize(
    "text",
    [
        "serve.default.svc.clusterset.local. 5 IN A 10.250.0.10",
        'clusterset_dns_requests_total{proto="udp"} 42.0',
        "tokens: 3",  # not a credential key
    ],
)
def test_other_text_is_kept(text: str) -> None:
    assert redact(text) == text
