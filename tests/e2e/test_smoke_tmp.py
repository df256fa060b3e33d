import time
import pytest
from tests.e2e.workflows import fanout_output

@pytest.mark.e2e
def test_smoke(cluster, workers, client, db, probe_dir):
    t=time.monotonic()
    workers(1)
    print("workers ready", time.monotonic()-t)
    cfg = {s: {"dir": str(probe_dir)} for s in ("start","left","right","join")}
    t=time.monotonic()
    rid = client.create_run("fanout", {"n": 1}, config=cfg)
    view = client.wait(rid, timeout=20)
    print("run took", time.monotonic()-t, view.status, view.output)
    for e in db.events(rid): print(e)
    for j in db.jobs(rid): print(j)
    print(open(probe_dir/"executions.log").read())
    assert view.output == fanout_output(1)
