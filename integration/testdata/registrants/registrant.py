"""One service instance registered the way a Python registrant does it, with the real
client library from Debian (run with /usr/bin/python3): kazoo (zc.zk's convention: an
ephemeral node host:port holding {"pid": N}), python-etcd3 (a lease and a put of
"host:port", the confd/registrator convention), python-consul (an agent service with a
TTL check kept passing). Prints "registered" once the registry has it, then keeps it
alive until killed; a SIGKILL leaves the registry to expire it (session, lease, check).

usage: registrant.py kazoo|etcd3|consul SERVER NAME HOST PORT
"""
import json
import os
import sys
import time
import uuid

kind, server, name, host, port = sys.argv[1:6]
port = int(port)
# Where the instance goes; registrants that share a registry often use different roots.
root = os.environ.get("REGISTRANT_ROOT", "/services")


def kazoo_register():
    from kazoo.client import KazooClient
    zk = KazooClient(hosts=server, timeout=4.0)
    zk.start(timeout=15)
    path = "%s/%s/%s:%d" % (root, name, host, port)
    zk.create(path, json.dumps({"pid": os.getpid()}).encode(), ephemeral=True, makepath=True)
    return lambda: None


def etcd3_register():
    import etcd3
    h, p = server.split(":")
    client = etcd3.client(host=h, port=int(p))
    lease = client.lease(2)
    client.put("%s/%s/%s" % (root, name, uuid.uuid4()), "%s:%d" % (host, port), lease=lease)
    return lease.refresh


def consul_register():
    import consul
    from consul.base import CB
    h, p = server.split(":")
    c = consul.Consul(host=h, port=int(p))
    sid = "%s-%d" % (name, port)
    c.agent.service.register(name, service_id=sid, address=host, port=port,
                             check=consul.Check.ttl("2s"))

    # python-consul 0.7.1 (Debian 12) sends ttl_pass as GET, which Consul refuses since
    # 1.0 ("method GET not allowed"): its instances stay critical. The same call with
    # PUT, through the library's own HTTP client.
    def ttl_pass():
        c.http.put(CB.bool(), "/v1/agent/check/pass/service:" + sid)

    ttl_pass()
    return ttl_pass


keepalive = {"kazoo": kazoo_register, "etcd3": etcd3_register, "consul": consul_register}[kind]()
print("registered", flush=True)
while True:
    time.sleep(0.5)
    keepalive()
