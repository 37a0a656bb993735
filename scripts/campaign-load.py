"""Load campaign driver (see scripts/campaign-load): a fixed event rate against a running
hookrelay with a healthy, a slow and a failing endpoint; samples RSS, delivery latency
percentiles (and the slowest) of the healthy endpoint and its pending count every INTERVAL
seconds. LOAD_RECOVER_AT=s makes the failing endpoint answer 200 from s seconds on."""
import json, os, sys, threading, time, urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

base, token, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
duration = float(os.environ.get("LOAD_SECONDS", "120"))
rate = float(os.environ.get("LOAD_RATE", "50"))
interval = float(os.environ.get("LOAD_INTERVAL", "10"))
# The failing endpoint answers 200 from this many seconds on (never by default).
recover_at = float(os.environ.get("LOAD_RECOVER_AT", "inf"))

lock = threading.Lock()
latencies = []          # healthy endpoint, seconds, since the last sample
seen = {}               # healthy endpoint: webhook-id -> count


class Hook(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path == "/ok":
            sent = json.loads(body)["data"]["sent_at"]
            with lock:
                latencies.append(time.time() - sent)
                wid = self.headers.get("webhook-id")
                seen[wid] = seen.get(wid, 0) + 1
            code = 200
        elif self.path == "/slow":
            time.sleep(0.8)
            code = 200
        else:
            code = 200 if time.time() - start >= recover_at else 500
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *a):
        pass


start = time.time()
server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
server.daemon_threads = True
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]


def api(method, path, body=None):
    req = urllib.request.Request(base + path, method=method,
                                 data=None if body is None else json.dumps(body).encode(),
                                 headers={"Authorization": "Bearer " + token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status, json.loads(r.read() or b"null")


endpoints = {}
for kind in ("ok", "slow", "fail"):
    _, ep = api("POST", "/v1/tenants/default/endpoints",
                {"url": f"http://127.0.0.1:{port}/{kind}"})
    endpoints[kind] = ep["id"]


def rss_kib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pending(endpoint):
    n, cursor = 0, ""
    while True:
        _, page = api("GET", f"/v1/tenants/default/deliveries?status=pending&endpoint={endpoint}"
                             f"&limit=250&cursor={cursor}")
        n += len(page["data"])
        cursor = page.get("next_cursor")
        if not cursor:
            return n


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


ingested, errors5xx, ingested_ids = 0, 0, []
start = time.time()
next_sample = start + interval
samples = []
print(f"{'t(s)':>6} {'ingested':>9} {'rss MiB':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'max ms':>7} {'pending ok':>10}")
i = 0
while time.time() - start < duration:
    due = start + i / rate
    now = time.time()
    if due > now:
        time.sleep(due - now)
    try:
        status, ev = api("POST", "/v1/tenants/default/events",
                         {"type": "load.test", "data": {"i": i, "sent_at": time.time()}})
        ingested += 1
        ingested_ids.append(ev["id"])
    except urllib.error.HTTPError as e:
        if e.code >= 500:
            errors5xx += 1
    i += 1
    if time.time() >= next_sample:
        next_sample += interval
        with lock:
            lat, latencies[:] = list(latencies), []
        s = (round(time.time() - start), ingested, rss_kib() / 1024, pct(lat, 50) * 1000,
             pct(lat, 95) * 1000, pct(lat, 99) * 1000, max(lat, default=float("nan")) * 1000,
             pending(endpoints["ok"]))
        samples.append(s)
        print("%6d %9d %8.1f %7.0f %7.0f %7.0f %7.0f %10d" % s, flush=True)

# Drain: every event must reach the healthy endpoint.
deadline = time.time() + 120
while time.time() < deadline:
    with lock:
        missing = sum(1 for e in ingested_ids if e not in seen)
    if missing == 0:
        break
    time.sleep(0.5)
with lock:
    lost = sum(1 for e in ingested_ids if e not in seen)
    delivered = len(ingested_ids) - lost
    dups = sum(n - 1 for e, n in seen.items())
print(f"load: ingested {ingested}, delivered (healthy endpoint) {delivered}, duplicates {dups}, "
      f"lost {lost}, 5xx {errors5xx}, RSS start {samples[0][2] if samples else 0:.1f} MiB, "
      f"end {rss_kib() / 1024:.1f} MiB, pending on healthy at end {pending(endpoints['ok'])}")
sys.exit(1 if lost or errors5xx else 0)
