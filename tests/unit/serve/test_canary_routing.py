"""A replica's canary routing (`CanaryLane.pick`) with the plan set by hand: dealt requests hold the
step's share, and sticky routing keeps each client on one version for the whole step, with about
the share of clients on the challenger. And who a request's client is (`client_of`)."""

from raylane.serve.auth import client_of
from raylane.serve.canary import CanaryLane
from raylane.serve.swap import Loaded

CHAMPION, CHALLENGER = Loaded(None, "m", "1", 0.0), Loaded(None, "m", "2", 0.0)


def lane(share: float, sticky: bool) -> CanaryLane:
    routing = CanaryLane(None, load=None, adopt=None, name="m", tick_s=3600)  # no reports: the plan is ours
    routing.challenger, routing.share, routing.sticky, routing.step_key = CHALLENGER, share, sticky, "2:0"
    return routing


def test_dealt_requests_hold_the_share_and_report_their_step():
    routing = lane(25, sticky=False)
    picks = [routing.pick(CHAMPION, None) for _ in range(400)]
    routing.stop()
    assert sum(loaded is CHALLENGER for loaded, _ in picks) == 100
    assert {step for _, step in picks} == {"2:0"}


def test_sticky_routing_keeps_a_client_on_one_version_and_splits_clients_by_the_share():
    routing = lane(25, sticky=True)
    clients = [f"client-{i}" for i in range(2000)]
    first = {c: routing.pick(CHAMPION, c)[0] for c in clients}
    again = {c: routing.pick(CHAMPION, c)[0] for c in reversed(clients)}
    assert first == again  # the same version for every request of a client in the step
    on_challenger = sum(v is CHALLENGER for v in first.values()) / len(clients)
    assert 0.22 < on_challenger < 0.28, on_challenger
    # A request that names no client is dealt, as without sticky.
    assert sum(routing.pick(CHAMPION, None)[0] is CHALLENGER for _ in range(400)) == 100
    routing.step_key = "2:1"  # the next step draws anew: some clients change sides
    moved = sum(routing.pick(CHAMPION, c)[0] is not first[c] for c in clients)
    routing.stop()
    assert moved > 0


def test_no_challenger_or_no_share_routes_everything_to_the_champion():
    routing = lane(0, sticky=False)
    assert all(routing.pick(CHAMPION, None)[0] is CHAMPION for _ in range(50))
    routing.challenger, routing.share = None, 50
    assert all(routing.pick(CHAMPION, "someone")[0] is CHAMPION for _ in range(50))
    routing.stop()


def test_the_client_is_the_key_digest_else_the_request_id():
    keyed = {"headers": [(b"authorization", b"Bearer secret-key"), (b"x-request-id", b"r-1")]}
    other_key = {"headers": [(b"authorization", b"Bearer other-key")]}
    assert client_of(keyed) == client_of({"headers": [(b"authorization", b"Bearer secret-key")]})
    assert client_of(keyed) != client_of(other_key) and "secret-key" not in client_of(keyed)
    assert client_of({"headers": [(b"x-request-id", b"r-1")]}) == "r-1"
    assert client_of({"headers": []}) is None
