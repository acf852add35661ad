"""What `clusterset gather` never writes: credentials, whatever shape they come in; and what
it must keep intact: the YAML it dumps (a pod's serviceAccountToken volume, secret volumes)."""

from __future__ import annotations

import pytest
import yaml

from clusterset.kube.gather import REDACTED, redact

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6Ik.eyJpc3MiOiJrdWJlcm5ldGVzL3NlcnZpY2VhY2NvdW50Ii.c2lnbmF0dXJlLXNpZ25hdHVyZQ"
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nq7Xx\n-----END RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        (f"token: {JWT}", JWT),  # a kubeconfig user
        ("    token: s3cr3t-value", "s3cr3t-value"),
        ('{"token": "abc.def-123"}', "abc.def-123"),  # JSON
        ('msg={\\"token\\":\\"abc-777\\"}', "abc-777"),  # JSON escaped inside a log line
        ("msg=login token=abc123 user=x", "abc123"),  # logfmt
        ("Authorization: Bearer sha256~AbCdEf0123", "sha256~AbCdEf0123"),
        ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA=="),
        ("client-key-data: LS0tLS1CRUdJTiBSU0Eg", "LS0tLS1CRUdJTiBSU0Eg"),
        ("password=hunter2", "hunter2"),
        ('password: "correct horse battery"', "horse battery"),  # a quoted value, whole
        ("token: 'abc,def'", "def"),
        ("api_key=k-123 apiKey: k-456", "k-123"),
        ("passwd: pw-9", "pw-9"),
        ("run --password pw-1 --token=tk-2", "pw-1"),
        ("run --password pw-1 --token=tk-2", "tk-2"),
        ("fetching https://user:pa55@registry.example.com/v2/", "pa55"),
        ("Cookie: session=abc; csrf=def", "csrf=def"),
        (f"a JWT alone in a log line: {JWT} (end)", JWT),
        (f"key:\n{PEM}\nafter", "MIIEpAIBAAKCAQEA"),
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
        "automountServiceAccountToken: true",  # a key that ends in Token
        "secretName: my-tls",
    ],
)
def test_other_text_is_kept(text: str) -> None:
    assert redact(text) == text


def test_a_pods_yaml_stays_yaml() -> None:
    """The volumes every pod has (a projected serviceAccountToken) and secret volumes: their
    keys are not credentials, and the next line is not their value."""
    pod = {
        "spec": {
            "automountServiceAccountToken": True,
            "volumes": [
                {"name": "kube-api-access", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}},
                {"name": "tls", "secret": {"secretName": "my-tls", "defaultMode": 420}},
            ],
            "containers": [{"name": "c", "env": [{"name": "TOKEN", "value": "tk-3"}]}],
        }
    }  # fmt: skip
    text = yaml.safe_dump(pod, sort_keys=False)
    assert yaml.safe_load(redact(text)) == pod
