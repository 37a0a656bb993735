"""Dashboard pages over a large store (see scripts/bench-ui).

populate DB N: adds N events, N deliveries (to the store's endpoints, spread over the last 24
hours; 90 % delivered, 8 % failed, 2 % cancelled) and N attempts straight into a migrated,
stopped SQLite store.
measure BASE TOKEN: logs in to /ui and times each page (median of 5 loads), then the consumer
portal's pages from a portal link of the default tenant."""
import http.cookiejar, json, random, re, sqlite3, statistics, sys, time, urllib.error
import urllib.parse, urllib.request

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def ulid(ms):
    n = (ms << 80) | random.getrandbits(80)
    return "".join(CROCKFORD[(n >> (5 * i)) & 31] for i in reversed(range(26)))


def populate(db, n):
    con = sqlite3.connect(db)
    endpoints = [r[0] for r in con.execute("SELECT id FROM endpoints WHERE tenant_id = 'default'")]
    assert endpoints, "create endpoints first"
    now = int(time.time() * 1000)
    start = now - 24 * 3600 * 1000
    batch = 50_000
    for lo in range(0, n, batch):
        ev, dl, at = [], [], []
        for i in range(lo, min(n, lo + batch)):
            t = start + (now - start) * i // n
            eid, did = "evt_" + ulid(t), "dlv_" + ulid(t)
            data = json.dumps({"order_id": f"o_{i}", "amount": i % 1000, "note": "<b>bench</b>"})
            ev.append((eid, "default", f"order.{('created', 'paid', 'shipped')[i % 3]}", data, t))
            r = i % 50
            status = "failed" if r < 4 else "cancelled" if r == 4 else "delivered"
            ep = endpoints[i % len(endpoints)]
            dl.append((did, "default", eid, ep, status, t, t + 40))
            code = 500 if status == "failed" else 200
            outcome = "failed" if status == "failed" else "success"
            at.append(("att_" + ulid(t), did, t, 40, code, "ok", outcome))
        con.executemany(
            "INSERT INTO events (id, tenant_id, type, data, created_at) VALUES (?,?,?,?,?)", ev)
        con.executemany(
            "INSERT INTO deliveries (id, tenant_id, event_id, endpoint_id, status, attempts, "
            "max_attempts, created_at, updated_at) VALUES (?,?,?,?,?,1,1,?,?)", dl)
        con.executemany(
            "INSERT INTO attempts (id, delivery_id, attempt_number, started_at, duration_ms, "
            "status_code, response, outcome) VALUES (?,?,1,?,?,?,?,?)", at)
        con.commit()
    con.execute("ANALYZE")
    con.commit()
    print(f"populated {n} events, deliveries and attempts over {len(endpoints)} endpoints")


def measure(base, token):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "/ui/login").read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    form = urllib.parse.urlencode({"token": token, "csrf": csrf}).encode()
    req = urllib.request.Request(base + "/ui/login", data=form, headers={"Origin": base})
    opener.open(req).read()

    def get(path):
        t = time.perf_counter()
        body = opener.open(base + path).read().decode()
        return time.perf_counter() - t, body

    _, deliveries = get("/ui/t/default/deliveries")
    dlv = re.search(r'href="/ui/t/default/deliveries/(dlv_[0-9A-Z]+)"', deliveries).group(1)
    after = re.search(r'href="(/ui/t/default/deliveries\?[^"]*after=[^"]+)"', deliveries)
    _, eps = get("/ui/t/default/endpoints")
    ep = re.search(r'href="/ui/t/default/endpoints/(ep_[0-9A-Z]+)"', eps).group(1)
    hour_ago = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 3600))
    two_hours_ago = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - 7200))
    pages = [
        ("overview", "/ui/t/default"),
        ("endpoints", "/ui/t/default/endpoints"),
        ("endpoint detail", f"/ui/t/default/endpoints/{ep}"),
        ("events", "/ui/t/default/events"),
        ("events by type", "/ui/t/default/events?type=order.paid"),
        ("deliveries", "/ui/t/default/deliveries"),
        ("deliveries, next page", after.group(1).replace("&amp;", "&") if after else None),
        ("deliveries failed", "/ui/t/default/deliveries?status=failed"),
        ("deliveries by endpoint", f"/ui/t/default/deliveries?endpoint={ep}"),
        ("deliveries 2h-1h ago",
         f"/ui/t/default/deliveries?since={two_hours_ago}&until={hour_ago}"),
        ("delivery detail", f"/ui/t/default/deliveries/{dlv}"),
    ]
    failed = time_pages(get, pages)

    # The consumer portal, from a link of the default tenant (its cookie holds the link's token).
    req = urllib.request.Request(
        base + "/v1/tenants/default/portal-links", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    link = json.loads(urllib.request.urlopen(req).read())
    portal = urllib.request.build_opener()
    portal.addheaders = [("Cookie", f"hr_portal=f.{link['token']}")]

    def portal_get(path):
        t = time.perf_counter()
        body = portal.open(base + path).read().decode()
        return time.perf_counter() - t, body

    _, deliveries = portal_get("/portal/deliveries")
    after = re.search(r'href="(/portal/deliveries\?[^"]*after=[^"]+)"', deliveries)
    portal_pages = [
        ("portal endpoints", "/portal/endpoints"),
        ("portal endpoint", f"/portal/endpoints/{ep}"),
        ("portal deliveries", "/portal/deliveries"),
        ("portal next page", after.group(1).replace("&amp;", "&") if after else None),
        ("portal failed", "/portal/deliveries?status=failed"),
        ("portal by endpoint", f"/portal/deliveries?endpoint={ep}"),
        ("portal 2h-1h ago", f"/portal/deliveries?since={two_hours_ago}&until={hour_ago}"),
        ("portal delivery", f"/portal/deliveries/{dlv}"),
        ("portal event types", "/portal/event-types"),
    ]
    failed = time_pages(portal_get, portal_pages) or failed
    if failed:
        sys.exit(1)


def time_pages(get, pages):
    """Prints the median and max of 5 loads of each page; whether one failed."""
    print(f"{'page':<26} {'median ms':>9} {'max ms':>7}")
    failed = False
    for name, path in pages:
        if path is None:
            continue
        try:
            times = [get(path)[0] * 1000 for _ in range(5)]
        except urllib.error.HTTPError as e:
            print(f"{name:<26} FAILED: {e.code} {e.read().decode()[:300]}")
            failed = True
            continue
        print(f"{name:<26} {statistics.median(times):9.1f} {max(times):7.1f}")
    return failed


if __name__ == "__main__":
    if sys.argv[1] == "populate":
        populate(sys.argv[2], int(sys.argv[3]))
    else:
        measure(sys.argv[2], sys.argv[3])
