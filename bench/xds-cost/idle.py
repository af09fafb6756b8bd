"""Node CPU per routing write while no xDS stream is open (review finding 1).
HOSTS hosts (default 3000) of one service "big", or MANY=1: one service per host; then 2000
writes that change a host's revision from 4 clients. Arguments go to `discovery serve`
(e.g. --xds-listen off). Usage: MANY=1 HOSTS=10000 python3 bench/xds-cost/idle.py"""
import sys, time, json, os, threading
from concurrent.futures import ThreadPoolExecutor
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h
from harness import Node, cpu, rss
HOSTS = int(os.environ.get("HOSTS", "3000"))
n = Node(*sys.argv[1:])
try:
    with ThreadPoolExecutor(16) as ex:
        list(ex.map(lambda i: n.register(f"svc{i}" if os.environ.get("MANY") else "big", f"10.{i//65536}.{(i//256)%256}.{i%256}", 8080, az="a", region="r"), range(HOSTS)))
    time.sleep(1)
    c0 = cpu(n.proc.pid); t0 = time.time(); k = 0
    # churn: a host changes revision (a routing change) as fast as one client can
    def churn(j):
        s, _, b = n.request("POST", "/v1/registration/big", json.dumps(dict(ip=f"10.0.0.{j%200}", port=8080, revision=f"r{j}", ttl=600, tags={"az": "a", "region": "r"})))
        assert s == 200
    with ThreadPoolExecutor(4) as ex:
        list(ex.map(churn, range(2000)))
    dt = time.time() - t0; dc = cpu(n.proc.pid) - c0
    print(f"{h.BIN}: 2000 routing writes in {dt:.2f}s, node CPU {dc:.2f}s ({dc/2000*1000:.2f} ms/write), rss {rss(n.proc.pid)}")
finally:
    n.stop()
