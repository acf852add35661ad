"""Keep every member's ValidatingWebhookConfiguration trusting the hub's webhook certificate.

The chart installs the configuration in each member (failurePolicy Ignore); the hub
reads its CA (ca.crt of its certificate Secret) and writes it into every webhook's
`clientConfig.caBundle` there. Only the named configuration is touched, and only its
caBundle fields; a missing configuration is reported (MISSING), never created: the caller
checks every member again and again, and says so once per member.
"""

from __future__ import annotations

import base64
import enum
import logging

from clusterset.kube.api import ApiError, KubeApi

log = logging.getLogger(__name__)

PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


class CaBundle(enum.Enum):
    """What ensure_ca_bundle found."""

    UPDATED = "updated"
    UNCHANGED = "unchanged"
    MISSING = "missing"  # no such configuration in the cluster


async def ensure_ca_bundle(api: KubeApi, name: str, ca: bytes) -> CaBundle:
    """Set caBundle on every webhook of configuration `name`. Logs only an update."""
    path = f"{PATH}/{name}"
    try:
        vwc = await api.get(path)
    except ApiError as exc:
        if exc.status == 404:
            return CaBundle.MISSING
        raise
    bundle = base64.b64encode(ca).decode()
    changed = False
    for hook in vwc.get("webhooks") or []:
        cc = hook.setdefault("clientConfig", {})
        if cc.get("caBundle") != bundle:
            cc["caBundle"] = bundle
            changed = True
    if not changed:
        return CaBundle.UNCHANGED
    await api.replace(path, vwc)
    log.info("%s: caBundle of ValidatingWebhookConfiguration %s updated", api.name, name)
    return CaBundle.UPDATED
