"""Node CPU per write with NSTREAMS (default 10) ADS streams, delta (DELTA=1, default) or
state of the world (DELTA=0), each subscribed by name to 10,000 Listener and 10,000 Cluster
names of services without hosts (review finding 2); then 200 writes to another service.
Usage: NSTREAMS=3 python3 bench/xds-cost/names.py"""
import sys, time, json, os
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import *
NSTREAMS = int(os.environ.get("NSTREAMS", "10")); DELTA = os.environ.get("DELTA", "1") == "1"
n = Node()
try:
    names = [f"ghost-{i:05d}" for i in range(10000)]
    ss = []
    ch = channel(n)
    for k in range(NSTREAMS):
        s = ads(n, delta=DELTA, ch=ch)
        for url in (LDS, CDS):
            if DELTA: s.send_delta(type_url=url, resource_names_subscribe=names)
            else: s.send(type_url=url, resource_names=names)
            r = s.recv(60)
            if DELTA: s.send_delta(type_url=url, response_nonce=r.nonce)
            else: s.send(type_url=url, resource_names=names, version_info=r.version_info, response_nonce=r.nonce)
        ss.append(s)
    time.sleep(1)
    c0 = cpu(n.proc.pid); t0 = time.time()
    for j in range(200):
        n.request("POST", "/v1/registration/web", json.dumps(dict(ip=f"10.0.0.{j%200}", port=80, revision=f"r{j}", ttl=600)))
        time.sleep(0.005)
    dt = time.time() - t0; dc = cpu(n.proc.pid) - c0
    print(f"{'delta' if DELTA else 'sotw'} {NSTREAMS} streams x 20k L/C names of hostless services: 200 writes in {dt:.2f}s, node CPU {dc:.2f}s ({dc/200*1000:.1f} ms/write)")
finally:
    n.stop()
