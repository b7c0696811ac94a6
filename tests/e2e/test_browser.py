"""The pages in a real browser: headless Chromium (Debian's) driven by Playwright.

Each test runs the real hypercorn (tests/e2e/harness.py) and saves a
screenshot of every page it drives under ``.artifacts/screenshots/``
(git-ignored). Waits are Playwright's own (a selector or a condition polled
until a timeout), never sleeps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest

from tests.browser import ARTIFACTS, chromium_path
from tests.e2e.conftest import StartServer, keep_secret
from tests.e2e.harness import Server
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

#: Playwright's waits, in milliseconds.
WAIT = 10_000
#: A reconnect after a restart: the bye's retry_after_ms (up to 5 s) plus backoff.
RECONNECT_WAIT = 25_000
PHONE = {"width": 390, "height": 760}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module, launched from the system's binary."""
    executable = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable)
        yield launched
        launched.close()


class Pages:
    """Pages of one test, each in its own browser context (its own storage)."""

    def __init__(self, browser: Any) -> None:
        self.browser = browser
        self.opened: list[Any] = []
        #: Uncaught errors of the pages' scripts: any fails the test.
        self.errors: list[str] = []

    def open(
        self,
        url: str,
        viewport: dict[str, int] | None = None,
        prepare: Callable[[Any], None] | None = None,
    ) -> Any:
        """``url`` in a fresh context; ``prepare(page)`` runs before it loads."""
        context = self.browser.new_context(viewport=viewport or DESKTOP)
        page = context.new_page()
        if prepare is not None:
            prepare(page)
        page.set_default_timeout(WAIT)
        page.on("pageerror", lambda error: self.errors.append(f"{url}: {error}"))
        self.opened.append(page)
        page.goto(url)
        return page


@pytest.fixture
def pages(browser: Any) -> Iterator[Pages]:
    """Open pages closed after the test; an uncaught script error fails it."""
    opened = Pages(browser)
    yield opened
    for page in opened.opened:
        page.context.close()
    assert not opened.errors, opened.errors


def shot(page: Any, name: str) -> None:
    """Save a screenshot of ``page`` as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, *, name: str = "", token: str = "", room: str = "lobby") -> None:
    if name:
        page.fill("#name", name)
    if token:
        page.fill("#token", token)
    page.fill("#first-room", room)
    page.click("#connect")
    page.wait_for_selector("#state[data-state=live]")


def say(page: Any, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")


def texts(page: Any) -> list[str]:
    """The texts of the delivered messages shown (pending sends left out)."""
    return list(
        page.eval_on_selector_all(".msg:not(.pending) .text", "els => els.map(e => e.textContent)")
    )


def seqs(page: Any) -> list[int]:
    return [
        int(seq)
        for seq in page.eval_on_selector_all(
            ".msg:not(.pending)", "els => els.map(e => e.dataset.seq)"
        )
    ]


def shown(page: Any, text: str) -> None:
    page.wait_for_selector(f".msg:not(.pending) .text:text-is('{text}')")


def test_two_pages_chat(start: StartServer, pages: Pages) -> None:
    server = start()
    alice = pages.open(server.http("/app"))
    sign_in(alice, name="alice")
    bob = pages.open(server.http("/app"), viewport=PHONE)
    sign_in(bob, name="bob")
    alice.wait_for_selector("#members li:text-is('bob')")
    say(alice, "hello bob")
    shown(bob, "hello bob")
    say(bob, "hi alice")
    shown(alice, "hi alice")
    assert texts(alice) == texts(bob) == ["hello bob", "hi alice"]
    meta = alice.inner_text(".msg:last-child .meta")
    assert meta.startswith("bob") and ":" in meta  # who, and when
    # A second room: joined on a live connection, its messages apart.
    alice.fill("#join-room", "games")
    alice.click("#join button")
    alice.wait_for_selector("#rooms button[data-room=games][aria-current=true]")
    say(alice, "anyone for chess?")
    shown(alice, "anyone for chess?")
    assert "anyone for chess?" not in texts(bob)
    alice.click("#rooms button[data-room=lobby]")
    shot(alice, "app-desktop")
    shot(bob, "app-phone")
    # The phone page fits its width: nothing scrolls sideways.
    assert bob.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]


def test_a_page_survives_a_restart_and_shows_missed_messages_once(
    start: StartServer, pages: Pages, fresh_redis: RedisServer
) -> None:
    env = {"CHAT_BROKER_URL": fresh_redis.url}
    first = start({**env, "CHAT_NODE_ID": "node-a"})
    other = start({**env, "CHAT_NODE_ID": "node-b"})
    carol = pages.open(first.http("/app"))
    sign_in(carol, name="carol")
    dave = pages.open(other.http("/app"))
    sign_in(dave, name="dave")
    for text in ("before-1", "before-2"):
        say(dave, text)
        shown(carol, text)

    first.stop()  # SIGTERM: bye shutdown, 1001, and the process ends
    carol.wait_for_selector("#state[data-state=reconnecting]")
    # Missed while carol is away, and one of hers typed while reconnecting.
    for text in ("missed-1", "missed-2", "missed-3"):
        say(dave, text)
        shown(dave, text)
    say(carol, "typed-while-away")
    assert carol.is_visible(".msg.pending .text:text-is('typed-while-away')")
    again = start({**env, "CHAT_NODE_ID": "node-a"}, port=first.port)
    assert again.port == first.port

    carol.wait_for_selector("#state[data-state=recovered]", timeout=RECONNECT_WAIT)
    shown(carol, "typed-while-away")
    shown(dave, "typed-while-away")
    expected = ["before-1", "before-2", "missed-1", "missed-2", "missed-3", "typed-while-away"]
    assert texts(carol) == expected  # each once, in order
    assert texts(dave) == expected  # the retried send was published once
    assert seqs(carol) == sorted(seqs(carol)) == list(range(seqs(carol)[0], seqs(carol)[0] + 6))
    shot(carol, "app-recovered")


def test_the_monitor_sees_a_session_appear_go_idle_and_close_with_its_reason(
    start: StartServer, pages: Pages
) -> None:
    server = start({"CHAT_IDLE_AFTER": "1", "CHAT_IDLE_TIMEOUT": "0"})
    monitor = pages.open(server.http("/monitor"), viewport={"width": 1400, "height": 1000})
    monitor.wait_for_selector("#stream[data-state=live]")
    erin = pages.open(server.http("/app"))
    sign_in(erin, name="erin")
    session = server.json("/status/sessions?user=erin")["sessions"][0]["id"]
    row = f"#sessions tr[data-session='{session}']"
    monitor.wait_for_selector(f"{row}[data-state=active]")
    # Pings keep erin alive but are not activity: after CHAT_IDLE_AFTER she is idle.
    monitor.wait_for_selector(f"{row}[data-state=idle]")
    monitor.click(row)
    monitor.wait_for_selector("#detail .history li:has-text('idle')")
    shot(monitor, "monitor")
    monitor.click(f"{row} button.danger")
    monitor.wait_for_selector(f"{row}[data-state=closed]")
    assert "disconnected" in monitor.inner_text(f"{row} td.state")
    closed = f"#closed tr[data-session='{session}']"
    monitor.wait_for_selector(closed)
    assert "1008" in monitor.inner_text(closed) and "disconnected" in monitor.inner_text(closed)
    # The page says why, and does not come back (1008 is final).
    erin.wait_for_selector("#state[data-state=closed]")
    assert "Disconnected by an operator" in erin.inner_text("#messages")
    shot(monitor, "monitor-closed")
    shot(erin, "app-disconnected")


#: A hidden tab runs no animation frame: this holds the page's frames until released.
HELD_FRAMES = """
window.__frames = [];
window.requestAnimationFrame = (callback) => window.__frames.push(callback);
"""


def fake_view(n: int) -> dict[str, Any]:
    """A session as ``/status/sessions`` shows it (made up: no server holds it)."""
    return {
        "id": f"fake{n:06d}",
        "user": f"user{n}",
        "state": "active",
        "closing": False,
        "protocol": "chat.v1",
        "rooms": ["lobby"],
        "remote": "127.0.0.1:1",
        "node": "n",
        "connected_at": "2026-01-01T00:00:00.000Z",
        "last_activity_at": "2026-01-01T00:00:00.000Z",
        "idle_s": 0.0,
        "messages_in": 0,
        "messages_out": 0,
        "queue": 0,
        "close_code": None,
        "close_reason": None,
        "closed_by": None,
        "closed_at": None,
    }


def test_a_hidden_monitor_holds_a_bounded_number_of_changes_then_reloads(
    start: StartServer, pages: Pages
) -> None:
    # 20,000 distinct sessions change while no frame runs (a tab in the background):
    # held one by one, the page's heap grew with each; past its bound (1,024) the page
    # forgets them and reloads what it shows once it runs a frame again.
    events = [b'event: hello\ndata: {"node": "n", "interval": 2, "trend": []}\n\n']
    for batch in range(20):
        views = [fake_view(batch * 1000 + n) for n in range(1000)]
        events.append(
            b"event: sessions\ndata: " + json.dumps({"sessions": views}).encode() + b"\n\n"
        )
    streams: list[str] = []

    def fake_stream(route: Any) -> None:
        streams.append(route.request.url)
        if len(streams) == 1:
            route.fulfill(status=200, content_type="text/event-stream", body=b"".join(events))
        else:  # the reconnects: the stream is away
            route.fulfill(status=503, body=b"")

    def prepare(page: Any) -> None:
        page.add_init_script(HELD_FRAMES)
        page.route("**/status/events", fake_stream)

    server = start()
    monitor = pages.open(server.http("/monitor"), prepare=prepare)
    # The whole body was read (then the stream is away).
    monitor.wait_for_selector("#stream[data-state=reconnecting]", state="attached")
    cdp = monitor.context.new_cdp_session(monitor)
    cdp.send("Performance.enable")
    cdp.send("HeapProfiler.collectGarbage")
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    # Measured: 2.0 MB with the bound, 7.6 MB holding them all.
    assert metrics["JSHeapUsedSize"] < 4 * 2**20, metrics["JSHeapUsedSize"]
    # Shown again: the frames run, and the page shows what the server has (no session),
    # not the 100 first of the changes it dropped.
    with monitor.expect_response(lambda r: "/status/sessions?limit=100" in r.url):
        monitor.evaluate("window.__frames.splice(0).forEach((f) => f(performance.now()))")
    assert monitor.locator("#sessions tr").count() == 0


SECRET = keep_secret("browser-hs256-secret-" + "b" * 32)


def mint(sub: str, **claims: Any) -> str:
    payload = {"sub": sub, "exp": time.time() + 300, **claims}
    return keep_secret(jwt.encode(payload, SECRET, algorithm="HS256"))


def test_jwt_login_on_both_pages_keeps_tokens_out_of_urls(start: StartServer, pages: Pages) -> None:
    server = start({"CHAT_JWT_SECRET": SECRET})
    token = mint("frank")
    page = pages.open(server.http("/app"))
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda ws: urls.append(ws.url))
    sign_in(page, token=token)
    assert page.inner_text("#me") == "frank"
    say(page, "signed in with a token")
    shown(page, "signed in with a token")
    shot(page, "app-jwt")

    monitor = pages.open(server.http("/monitor"))
    monitor.on("request", lambda request: urls.append(request.url))
    monitor.wait_for_selector("#login:not(.hidden)")  # 401 without a token: it asks
    monitor.fill("#token", token)  # a user's token is not an admin's
    monitor.click("#login button")
    monitor.wait_for_selector("#login-problem:has-text('not an admin token')")
    # Short-lived: the monitor's event stream ends at its exp, and the page asks again.
    admin = mint("ops", admin=True, exp=time.time() + 6)
    monitor.fill("#token", admin)
    monitor.click("#login button")
    monitor.wait_for_selector("#stream[data-state=live]")
    monitor.wait_for_selector("#sessions tr[data-session] td:text-is('frank')")
    shot(monitor, "monitor-jwt")
    assert any("/ws/lobby" in url for url in urls)
    assert not [url for url in urls if token in url or admin in url]

    # An expired token: the handshake is refused (401, which a browser reports as
    # close 1006); the page stops at once and asks to sign in again.
    late = pages.open(server.http("/app"))
    late.fill("#token", mint("grace", exp=time.time() - 120))
    late.click("#connect")
    late.wait_for_selector("#state[data-state=closed]")
    late.wait_for_selector("#login:not(.hidden)")
    assert "expired" in late.inner_text("#login-problem")
    assert late.is_hidden("#chat")
    shot(late, "app-token-expired")

    monitor.wait_for_selector("#login:not(.hidden)", timeout=RECONNECT_WAIT)
    assert "expired" in monitor.inner_text("#login-problem")


def test_pages_are_refused_to_an_origin_not_allowed(start: StartServer) -> None:
    server = start({"CHAT_ALLOWED_ORIGINS": "https://chat.example.com"})
    evil = {"Origin": "https://evil.example"}
    assert server.get("/status/events", headers=evil).status_code == 403
    assert server.get("/static/chat.js", headers=evil).status_code == 403
    page = server.get("/app")
    assert page.status_code == 200
    assert "default-src 'none'" in page.headers["content-security-policy"]


def test_chat_js_reconnect_rules(start: StartServer, pages: Pages) -> None:
    server: Server = start()
    page = pages.open(server.http("/app"))
    rules = page.evaluate(
        """async () => {
        const m = await import('/static/chat.js');
        const codes = [1000, 1001, 1003, 1006, 1008, 1009, 1011, 1013, 4001, 4500, 4999];
        return {
          reconnect: codes.filter((c) => m.shouldReconnect(c, null)),
          byeSaysNo: m.shouldReconnect(1001, {reconnect: false}),
          ceilings: [0, 1, 2, 10].map((a) => m.backoffDelay(a, {base: 500, max: 30000}, () => 1)),
          floor: m.backoffDelay(0, {base: 500, max: 30000, floor: 2731}, () => 0),
        };
        }"""
    )
    assert rules == {
        "reconnect": [1001, 1006, 1011, 1013, 4001],
        "byeSaysNo": False,
        "ceilings": [500, 1000, 2000, 30000],
        "floor": 2731,
    }


# -- chat.js against a fake WebSocket: the rules, driven frame by frame ----------------------

#: A scripted WebSocket for chat.js (options.WebSocket): open at once; the test delivers
#: frames and drops connections. ``until`` polls a condition with a deadline (no sleeps).
FAKE = """
const m = await import('/static/chat.js');
const sockets = [];
class FakeSocket {
  constructor(url, protocols) {
    Object.assign(this, { url, protocols, readyState: 1, sent: [] });
    sockets.push(this);
  }
  send(data) { this.sent.push(JSON.parse(data)); }
  close() { this.readyState = 3; }
  deliver(...frames) { this.onmessage({ data: frames.map((f) => JSON.stringify(f)).join('\\n') }); }
  drop(code = 1006) { this.readyState = 3; this.onclose({ code, reason: '' }); }
}
const until = async (check, what, ms = 5000) => {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error('timed out waiting for ' + what);
    await new Promise((r) => setTimeout(r, 5));
  }
};
const last = () => sockets[sockets.length - 1];
const welcome = (limits = { rate: 1000, burst: 100 }) => ({
  type: 'welcome', session: 's' + sockets.length, user: 'me', node: 'n',
  heartbeat: { interval: 25, timeout: 10 }, limits });
const joined = (room, seq = 0, extra = {}) => ({
  type: 'joined', room, seq, epoch: 'e1', recovered: false, members: [{ user: 'me' }], ...extra });
const states = [];
const client = (options) => {
  const chat = new m.ChatClient({
    user: 'me', WebSocket: FakeSocket, backoffBase: 10, backoffMax: 40, ...options });
  chat.addEventListener('state', (e) => states.push(e.detail));
  return chat;
};
const settled = (promise) => promise.then(
  (v) => ({ ok: v }), (e) => ({ code: e.code, message: e.message }));
const joins = () => last().sent.filter((f) => f.type === 'join');
"""


def run_js(page: Any, body: str) -> Any:
    """Run ``body`` (an async function's body, after :data:`FAKE`) in ``page``."""
    return page.evaluate(f"async () => {{ {FAKE}\n{body} }}")


@pytest.fixture(scope="module")
def static_server(start_shared: StartServer) -> Server:
    """A server for the pages that only need /static/chat.js."""
    return start_shared()


def test_chat_js_retries_a_join_refused_for_now_and_drops_one_refused_for_good(
    static_server: Server, pages: Pages
) -> None:
    page = pages.open(static_server.http("/app"))
    found = run_js(
        page,
        """
        const chat = client({ rooms: ['a', 'b', 'c'] });
        const left = [];
        chat.addEventListener('left', (e) => left.push(e.detail));
        const joinB = chat.join('b');
        const sameB = chat.join('b') === joinB;   // asked twice: the same promise
        const joinC = settled(chat.join('c'));
        const toC = settled(chat.send('c', 'never'));
        chat.connect();
        last().deliver(welcome(), joined('a'));
        await until(() => joins().length === 2, 'joins b, c');
        last().deliver(
          { type: 'error', code: 'forbidden', detail: 'room limit reached', id: 'join:c' });
        last().deliver(joined('b', 5));
        await joinB;
        // Reconnect: b is rejoined with since and epoch; refused "unavailable", then asked again.
        last().drop(1006);
        await until(() => sockets.length === 2, 'a reconnect');
        last().deliver(welcome(), joined('a', 0, { recovered: true }));
        await until(() => last().sent.some((f) => f.type === 'join'), 'rejoin b');
        last().deliver({ type: 'error', code: 'unavailable', detail: 'broker down', id: 'join:b' });
        await until(() => joins().length === 2, 'join b retried');
        return { sameB, c: await joinC, toC: await toC, left, rooms: [...chat.rooms.keys()],
                 joins: joins() };
        """,
    )
    assert found["sameB"] is True
    assert found["c"]["code"] == found["toC"]["code"] == "forbidden"
    assert found["left"] == [{"room": "c", "code": "forbidden", "detail": "room limit reached"}]
    assert found["rooms"] == ["a", "b"]  # b kept through a refusal for now; c dropped
    retried = {"type": "join", "room": "b", "id": "join:b", "since": 5, "epoch": "e1"}
    assert found["joins"] == [retried, retried]


def test_chat_js_settles_sends_by_their_replayed_id_bounds_the_outbox_and_gives_up(
    static_server: Server, pages: Pages
) -> None:
    page = pages.open(static_server.http("/app"))
    found = run_js(
        page,
        """
        const chat = client({ rooms: ['a', 'b'], outboxLimit: 3, maxSendAttempts: 2 });
        chat.connect();
        last().deliver(welcome(), joined('a'), joined('b'));
        const lost = settled(chat.send('a', 'lost ack', 'id-1'));
        const doomed = settled(chat.send('a', 'never acked', 'id-2'));
        const onB = settled(chat.send('b', 'to b', 'id-3'));
        const full = await settled(chat.send('a', 'one too many'));
        const nowhere = await settled(chat.send('zzz', 'not joined'));
        await until(() => last().sent.filter((f) => f.type === 'send').length === 3, 'three sends');
        chat.leave('b');
        // The connection drops before any ack; the replay after the rejoin carries id-1.
        last().drop(1006);
        await until(() => sockets.length === 2, 'a reconnect');
        last().deliver(welcome(), joined('a', 0, { recovered: true }),
          { type: 'message', room: 'a', seq: 1, id: 'id-1', user: 'me', text: 'lost ack', ts: 1 });
        const firstAck = await lost;
        const resent = last().sent.filter((f) => f.type === 'send').map((f) => f.id);
        last().drop(1006);   // id-2 has had its 2 attempts
        await until(() => sockets.length === 3, 'a second reconnect');
        last().deliver(welcome(), joined('a', 1, { recovered: true }));
        return { firstAck, resent, full, nowhere, onB: await onB, doomed: await doomed,
                 third: last().sent.filter((f) => f.type === 'send') };
        """,
    )
    assert found["firstAck"]["ok"] == {"type": "ack", "id": "id-1", "room": "a", "seq": 1}
    assert found["resent"] == ["id-2"]  # id-1 settled by its replay, not written again
    assert found["full"]["code"] == "outbox_full"
    assert found["nowhere"]["code"] == "not_joined"
    assert found["onB"]["code"] == "left"
    assert found["doomed"]["code"] == "gave_up"
    assert "may have been published" in found["doomed"]["message"]
    assert found["third"] == []


def test_chat_js_backoff_restarts_only_after_a_stable_connection_and_gives_up_on_refusals(
    static_server: Server, pages: Pages
) -> None:
    page = pages.open(static_server.http("/app"))
    found = run_js(
        page,
        """
        // Accepted, then dropped at once (1011), three times: the backoff keeps growing.
        const flaky = client({ rooms: ['a'], stableAfter: 150 });
        flaky.connect();
        for (let n = 1; n <= 3; n++) {
          await until(() => sockets.length === n, 'connection ' + n);
          last().deliver(welcome(), joined('a'));
          last().drop(1011);
        }
        // The states of the losses (with their close code), not of the attempts.
        const growing = states.filter((s) => s.state === 'reconnecting' && s.code === 1011)
          .map((s) => s.attempt);
        // One that lasted stableAfter: the backoff starts over.
        await until(() => sockets.length === 4, 'connection 4');
        last().deliver(welcome(), joined('a'));
        const since = Date.now();
        await until(() => Date.now() - since > 200, 'a stable connection');
        last().drop(1011);
        const after = states[states.length - 1].attempt;
        flaky.close();
        // Handshakes that never reach a welcome (browsers say 1006 for 401): stop.
        states.length = 0;
        sockets.length = 0;
        const refused = client({ rooms: ['a'], maxFirstFailures: 2, maxFailures: 3 });
        refused.connect();
        for (let n = 1; n <= 2; n++) {
          await until(() => sockets.length === n, 'handshake ' + n);
          last().drop(1006);
        }
        const gaveUpFirst = states[states.length - 1];
        // Once live, a server down for a while is waited for longer (maxFailures).
        states.length = 0;
        sockets.length = 0;
        const down = client({ rooms: ['a'], maxFirstFailures: 2, maxFailures: 3 });
        down.connect();
        last().deliver(welcome(), joined('a'));
        last().drop(1006);
        for (let n = 2; n <= 4; n++) {
          await until(() => sockets.length === n, 'handshake ' + n);
          last().drop(1006);
        }
        const gaveUp = states[states.length - 1];
        const waited = states.filter((s) => s.state === 'reconnecting' && s.code === 1006).length;
        // An expired token: at the first failure.
        states.length = 0;
        const exp = Math.floor(Date.now() / 1000) - 60;
        const token = 'x.' + btoa(JSON.stringify({ sub: 'me', exp })).replace(/=+$/, '') + '.y';
        const expired = client({ rooms: ['a'], token });
        expired.connect();
        last().drop(1006);
        return { growing, after, gaveUpFirst, gaveUp, waited, handshakes: sockets.length,
                 expired: states[states.length - 1], expiredProtocols: last().protocols };
        """,
    )
    assert found["growing"] == [1, 2, 3]
    assert found["after"] == 1
    assert found["gaveUpFirst"]["state"] == "closed" and found["gaveUpFirst"]["refused"] is True
    assert "could not connect (2 attempts" in found["gaveUpFirst"]["reason"]
    assert found["gaveUp"]["state"] == "closed" and found["gaveUp"]["refused"] is True
    assert "could not connect (3 attempts" in found["gaveUp"]["reason"]
    assert found["waited"] == 3  # the live one's loss, then 2 failed handshakes
    assert found["handshakes"] == 5  # 1 live, 3 refused, and the expired token's one
    assert found["expired"]["state"] == "closed" and found["expired"]["refused"] is True
    assert "expired" in found["expired"]["reason"]
    assert found["expiredProtocols"][-1].startswith("bearer.")


def test_chat_js_paces_a_burst_of_joins_and_sends_below_the_servers_rate(
    start: StartServer, pages: Pages
) -> None:
    # A small rate so the burst is large against it: unpaced, the refusals pass the
    # burst and the server closes the session 1008 (final).
    server = start({"CHAT_RATE": "40", "CHAT_BURST": "20", "CHAT_MAX_ROOMS_PER_SESSION": "11"})
    page = pages.open(server.http("/app"))
    found = page.evaluate(
        """async () => {
        const { ChatClient } = await import('/static/chat.js');
        const rooms = Array.from({ length: 12 }, (_, n) => 'r' + n);
        const chat = new ChatClient({ user: 'pacer', rooms });
        const seen = { states: [], errors: [], left: [] };
        chat.addEventListener('state', (e) => seen.states.push(e.detail.state));
        chat.addEventListener('error', (e) => seen.errors.push(e.detail.code));
        chat.addEventListener('left', (e) => seen.left.push(e.detail));
        const joins = rooms.map((room) => chat.join(room).then(() => 'joined', (e) => e.code));
        const sends = Array.from({ length: 60 }, (_, n) => chat.send('r1', 'burst ' + n));
        const started = performance.now();
        chat.connect();
        const acks = await Promise.all(sends);
        const took = performance.now() - started;
        seen.joins = await Promise.all(joins);
        seen.seqs = acks.map((ack) => ack.seq);
        seen.took = took;
        seen.state = chat.state;
        chat.close();
        return seen;
        }"""
    )
    assert found["state"] == "live" and "closed" not in found["states"][:-1]
    # The server measures arrivals: a stall on a loaded machine may bunch paced frames
    # into a refusal or two, which are retried (joins too); never a flood.
    assert found["errors"].count("rate_limited") < 10, found["errors"]
    assert found["seqs"] == list(range(1, 61))
    # The URL's room and ten more: the room limit refuses the twelfth, which is dropped.
    assert found["joins"] == ["joined"] * 11 + ["forbidden"]
    assert [left["room"] for left in found["left"]] == ["r11"]
    # Paced at 80 % of 40/s after a burst of 10: 61 paced frames take about 1.9 s.
    assert 1500 < found["took"] < 8000
