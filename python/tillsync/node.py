# SPDX-License-Identifier: Apache-2.0
"""Node: the sync node of include/tillsync/node.h, run on its own thread, with its events
delivered to Python safely.

Threading (python/README.md says the same for users):
  - The node runs on a C thread of its own (tsync_node_start). The library calls on_change,
    on_peer, on_peer_state and log on that thread, inside its loop, while peers wait.
  - The ctypes callbacks here run no user code there: each copies its arguments into a plain
    event object and puts it on a queue.Queue, inside try/except, so nothing can raise through
    the C frame and the node is never held up by the app.
  - The events reach the app either on a Python thread this class starts ("tillsync-events",
    deliver="thread", the default), which calls the app's callbacks one at a time in order, or
    on the app's own thread (deliver="manual") when it calls dispatch() or next_event(), for
    apps with their own event loop (a GUI's main thread).
  - The CFUNCTYPE objects are kept on the Node until tsync_node_free has returned: after that the
    library calls none of them.
  - ctypes releases the GIL during every C call, so close() (which joins the node's thread)
    cannot deadlock with a callback waiting for the GIL.
"""

import atexit
import ctypes
import json
import logging
import queue
import threading
import weakref
from dataclasses import dataclass

from . import _lib, errors
from ._closing import Closing
from ._lib import check, dec, enc

log = logging.getLogger("tillsync")

LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG = 1, 2, 3, 4


@dataclass(frozen=True)
class Change:
    """Batches from peers were merged (batches applied, conflicts LWW resolved)."""

    batches: int
    conflicts: int


@dataclass(frozen=True)
class Peer:
    """A peer's session began (up) or ended."""

    key: str
    address: str
    up: bool
    online: bool


@dataclass(frozen=True)
class PeerState:
    """A till's network state changed: state and previous are "discovered", "connecting",
    "connected", "unreachable", "waiting", "refused" or "gone"."""

    key: str
    address: str
    name: str
    state: str
    previous: str
    since_ms: int
    online: bool
    reason: str


@dataclass(frozen=True)
class Log:
    """One log line of the node (level: LOG_ERROR..LOG_DEBUG)."""

    level: int
    line: str


_STOP = object()  # ends the delivery thread
_live = weakref.WeakSet()


@atexit.register
def _close_all():
    # A node still running at interpreter exit would call into a dying interpreter.
    for n in list(_live):
        try:
            n.close()
        except Exception:
            pass


class Node(Closing):
    """Keeps the database at db_path in sync with the shop's other tills.

    Node(db_path, listen=None, peers=(), on_change=None, on_peer_state=None, on_peer=None,
    on_log=None, deliver="thread", **options): creates the node (opens its own connection,
    binds listen: "tcp://ADDR:PORT", port "*" for any free one; None: tcp://0.0.0.0:7400; "":
    do not listen). peers: static peers, "tcp://ADDR:PORT#KEY". Options (node.h's fields):
    log_level, status_path (None: "<db>.node", "": none), tick_ms, anti_entropy_ms, seal_ms,
    liveness_ms, window_bytes, no_mdns, prune_keep, prune_ms, backup_every_ms, backup_dir,
    backup_keep, key_path. on_log None: the library logs to stderr.

    start() runs it; close() stops and frees it. As a context manager it starts on enter and
    closes on exit."""

    _INT_OPTIONS = (
        "log_level",
        "tick_ms",
        "anti_entropy_ms",
        "window_bytes",
        "seal_ms",
        "liveness_ms",
        "prune_keep",
        "prune_ms",
        "backup_every_ms",
        "backup_keep",
    )

    def __init__(
        self,
        db_path,
        listen=None,
        peers=(),
        on_change=None,
        on_peer_state=None,
        on_peer=None,
        on_log=None,
        deliver="thread",
        no_mdns=False,
        status_path=None,
        backup_dir=None,
        key_path=None,
        **options
    ):
        if deliver not in ("thread", "manual"):
            raise errors.InvalidError('deliver: "thread" or "manual", not %r' % (deliver,), -2)
        L = _lib.lib()
        self.db_path = db_path
        self._n = None
        self._thread = None
        self._started = False
        self._deliver = deliver
        self._handlers = {Change: on_change, PeerState: on_peer_state, Peer: on_peer, Log: on_log}
        self._q = queue.Queue()
        self.dropped = 0  # events a callback failed to queue (never expected)
        self.callback_errors = 0  # exceptions raised by the app's callbacks (logged)
        self._names = {i: dec(L.tsync_peer_state_name(i)) for i in range(7)}

        o = _lib.init_struct(_lib.NodeOptions, "tsync_node_options_init")
        for k, v in options.items():
            if k not in self._INT_OPTIONS:
                raise errors.InvalidError("Node: unknown option %r" % (k,), -2)
            setattr(o, k, v)
        o.listen = enc(listen)
        self._peers = (ctypes.c_char_p * max(1, len(peers)))(*[enc(p) for p in peers])
        o.peers = self._peers
        o.npeers = len(peers)
        o.no_mdns = 1 if no_mdns else 0
        o.status_path = enc(status_path)
        o.backup_dir = enc(backup_dir)
        o.key_path = enc(key_path)
        # Kept for the node's life: the library holds these function pointers.
        self._cbs = (
            _lib.CHANGE_FN(self._c_change),
            _lib.PEER_STATE_FN(self._c_peer_state),
            _lib.PEER_FN(self._c_peer),
            _lib.LOG_FN(self._c_log),
        )
        o.on_change, o.on_peer_state, o.on_peer = self._cbs[0], self._cbs[1], self._cbs[2]
        if on_log is not None:
            o.log = self._cbs[3]
        n = ctypes.c_void_p()
        check(L.tsync_node_new(ctypes.byref(n), enc(db_path), ctypes.byref(o)))
        self._n = n
        _live.add(self)

    # ------------------------------------------------------------ on the node's thread (C)
    # Copy, queue, return: no user code, nothing that can raise through the C frame.

    def _put(self, make):
        try:
            self._q.put(make())
        except BaseException:
            self.dropped += 1

    def _c_change(self, _ctx, c):
        self._put(lambda: Change(c.contents.batches, c.contents.conflicts))

    def _c_peer_state(self, _ctx, e):
        def make():
            ev = e.contents
            return PeerState(
                dec(ev.key_hex) or "",
                dec(ev.address) or "",
                dec(ev.name) or "",
                self._names.get(ev.state, str(ev.state)),
                self._names.get(ev.previous, str(ev.previous)),
                ev.since_ms,
                bool(ev.online),
                dec(ev.reason) or "",
            )

        self._put(make)

    def _c_peer(self, _ctx, key, address, up, online):
        self._put(lambda: Peer(dec(key) or "", dec(address) or "", bool(up), bool(online)))

    def _c_log(self, _ctx, level, line):
        self._put(lambda: Log(level, dec(line) or ""))

    # ------------------------------------------------------------ on Python threads

    def _h(self):
        if self._n is None:
            raise errors.InvalidError("the node of %s is closed" % self.db_path, -2)
        return self._n

    def start(self):
        """Runs the node on its own thread (and, with deliver="thread", starts the thread that
        delivers its events). Raises ExistsError when already running."""
        check(_lib.lib().tsync_node_start(self._h()))
        self._started = True
        if self._deliver == "thread" and self._thread is None:
            self._thread = threading.Thread(
                target=self._deliver_loop, name="tillsync-events", daemon=True
            )
            self._thread.start()

    def _call(self, ev):
        fn = self._handlers.get(type(ev))
        if fn is None:
            return
        fn(ev)

    def _deliver_loop(self):
        while True:
            ev = self._q.get()
            if ev is _STOP:
                return
            try:
                self._call(ev)
            except Exception:
                self.callback_errors += 1
                log.exception("tillsync: a Node callback raised (the node goes on)")

    def next_event(self, timeout=None):
        """deliver="manual": the next event (Change, PeerState, Peer, Log), waiting up to timeout
        seconds (None: until one comes); None when none came."""
        if self._deliver != "manual":
            raise errors.InvalidError(
                'next_event: the node delivers on its own thread (deliver="thread")', -2
            )
        try:
            ev = self._q.get(timeout=timeout) if timeout != 0 else self._q.get_nowait()
        except queue.Empty:
            return None
        return None if ev is _STOP else ev

    def events(self):
        """deliver="manual": the events queued now (a list, possibly empty), without waiting."""
        out = []
        while True:
            ev = self.next_event(0)
            if ev is None:
                return out
            out.append(ev)

    def dispatch(self, timeout=0):
        """deliver="manual": calls the callbacks for the events queued, on the calling thread,
        first waiting up to timeout seconds for one. Exceptions of a callback propagate (the
        events after it stay queued). Returns how many events were handled."""
        ev = self.next_event(timeout)
        k = 0
        while ev is not None:
            k += 1
            self._call(ev)
            ev = self.next_event(0)
        return k

    @property
    def endpoint(self):
        """The endpoint really bound ("tcp://127.0.0.1:PORT"), "" when not listening."""
        return dec(_lib.lib().tsync_node_endpoint(self._h()))

    def status(self):
        """The node's status (dict; docs/NODE.md): online, peers with their state and lag,
        pending and held batches, refused inputs by reason, conflicts."""
        p = ctypes.c_void_p()
        check(_lib.lib().tsync_node_status_json(ctypes.byref(p), self._h()))
        return json.loads(_lib.take_string(p))

    def last_error(self):
        """The last failure on the node's thread as a TillsyncError (with .stopped, .count and
        .at_ms), or None while nothing failed. Poll it: count grows."""
        e = _lib.init_struct(_lib.NodeError, "tsync_node_error_init")
        check(_lib.lib().tsync_node_last_error(ctypes.byref(e), self._h()))
        if e.count == 0:
            return None
        err = errors.make(e.code, e.message.decode("utf-8", "replace"))
        err.stopped, err.count, err.at_ms = bool(e.stopped), e.count, e.at_ms
        return err

    def stop(self):
        """Stops the node and waits for its thread (idempotent). Events queued before stay
        deliverable; the delivery thread ends once it has delivered them."""
        if self._n is not None:
            _lib.lib().tsync_node_stop(self._n)
        self._end_delivery()

    def _end_delivery(self):
        t = self._thread
        if t is None:
            return
        self._thread = None
        self._q.put(_STOP)
        if t is not threading.current_thread():  # close() from inside a callback: let it end
            t.join()

    def close(self):
        """Stops the node, frees it and ends the delivery thread (after it delivered what was
        queued). Idempotent."""
        if self._n is not None:
            n, self._n = self._n, None
            _lib.lib().tsync_node_free(n)  # joins the node's thread: no callback after this
        self._end_delivery()
        _live.discard(self)

    def __enter__(self):
        if not self._started:
            self.start()
        return self

