"""Keep every member's ValidatingWebhookConfiguration trusting the hub's webhook certificate.

The chart installs the configuration in each member (failurePolicy Ignore); the hub
reads its CA (ca.crt of its certificate Secret) and writes it into every webhook's
`clientConfig.caBundle` there. Only the named configuration is touched, and only its
caBundle fields; a missing configuration is logged, never created.
"""

from __future__ import annotations

import base64
import logging

from clusterset.kube.api import ApiError, KubeApi

log = logging.getLogger(__name__)

PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


async def ensure_ca_bundle(api: KubeApi, name: str, ca: bytes) -> bool:
    """Set caBundle on every webhook of configuration `name`; True when it was changed."""
    path = f"{PATH}/{name}"
    try:
        vwc = await api.get(path)
    except ApiError as exc:
        if exc.status == 404:
            log.warning(
                "%s: no ValidatingWebhookConfiguration %s: webhook not wired", api.name, name
            )
            return False
        raise
    bundle = base64.b64encode(ca).decode()
    changed = False
    for hook in vwc.get("webhooks") or []:
        cc = hook.setdefault("clientConfig", {})
        if cc.get("caBundle") != bundle:
            cc["caBundle"] = bundle
            changed = True
    if changed:
        await api.replace(path, vwc)
        log.info("%s: caBundle of ValidatingWebhookConfiguration %s updated", api.name, name)
    return changed
