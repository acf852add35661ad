"""L3: `clusterset wire-dns`: point a cluster's DNS at clusterset dns, safely.

Steps, each of which can stop the run before the next (`run` drives them in order):
1. discover (`plan`): CoreDNS's `coredns` ConfigMap in kube-system (and NodeLocal
   DNSCache's `node-local-dns` when present). kube-dns, or a Corefile without the
   kubernetes plugin, is reported and nothing is touched.
2. compute the new Corefiles (`plan`, with `corefile.wire`); equal to today's: done.
3. canary (`canary`): the real CoreDNS binary runs each new Corefile on a loopback port
   (`corefile.loopback`; its kubernetes plugin watches the real cluster through the
   kubeconfig) and must answer a cluster.local name and the clusterset zone's SOA.
   Nothing is written when it does not.
4. apply (`kube.coredns`): server-side apply of `data.Corefile` under the field manager
   `clusterset-wire-dns`, the previous Corefile kept in the annotation
   `clusterset.io/previous-corefile`.
5. grace (`grace`): the cluster's DNS (`probe`) is asked the same names for `grace`
   seconds; when the clusterset zone never answers, or cluster.local stops answering, the
   previous Corefile is applied again (rollback).

`corefile` is pure text; every Kubernetes API call is `kube.coredns`'s.
"""
