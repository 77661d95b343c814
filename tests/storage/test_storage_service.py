"""The dev storage service and the Kubo RPC client: lifecycle, round trips, pins, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import requests

from decentralml_jupyter.errors import StorageError
from decentralml_jupyter.storage import (
    KuboStore,
    StorageTimeout,
    StorageUnavailable,
    compute_cid,
    storage_down,
    storage_status,
    storage_up,
)
from decentralml_jupyter.storage.service import read_state

UNKNOWN = "QmQpeUrxtQE5N2SVog1ZCxd7c7RN4fBNQu5aLwkk5RY9EE"  # well-formed, never added


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/cmdline").read_bytes() != b""  # not a zombie


def test_status_reports_the_recorded_pid(service) -> None:
    status = storage_status(service.port)
    assert status == {"url": service.url, "pid": service.pid, "running": True}
    assert storage_status(service.url) == status
    assert read_state(service.port)["pid"] == service.pid
    assert (service.home / "run" / f"storage-{service.port}.json").exists()


def test_up_is_idempotent(service) -> None:
    assert storage_up(port=service.port, repo=service.repo)["pid"] == service.pid


def test_the_service_listens_on_loopback_only(service) -> None:
    listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
    ours = [ln.split() for ln in listening if ln.split()[1].endswith(f":{service.port:04X}")]
    assert ours and all(f[1].startswith("0100007F:") for f in ours)  # 127.0.0.1
    assert Path("/proc/net/tcp6").read_text().count(f":{service.port:04X} ") == 0


@pytest.mark.parametrize("size", [0, 5, 700_000])
def test_put_get_round_trip(store: KuboStore, size: int) -> None:
    data = os.urandom(size)
    cid = store.put(data)
    assert cid == compute_cid(data)
    assert store.get(cid) == data
    assert store.has(cid)
    st = store.stat(cid)
    assert (st.cid, st.size) == (cid, size)
    assert st.links == (0 if size <= 262144 else 3)


def test_put_accepts_a_stream_and_files_round_trip(store: KuboStore, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(1_234_567))
    put = store.put_file(src)
    assert put.size == src.stat().st_size
    with open(src, "rb") as f:
        assert store.put(f) == put.cid
    got = store.get_file(put.cid, tmp_path / "out" / "copy.bin")
    assert got == put
    assert (tmp_path / "out" / "copy.bin").read_bytes() == src.read_bytes()


def test_has_is_false_for_unknown_content(store: KuboStore) -> None:
    assert not store.has(UNKNOWN)


def test_pin_and_unpin(store: KuboStore) -> None:
    cid = store.put(b"pinned later " + os.urandom(8), pin=False)
    assert not store.is_pinned(cid)
    store.pin(cid)
    assert store.is_pinned(cid)
    store.unpin(cid)
    assert not store.is_pinned(cid)
    with pytest.raises(StorageError, match="not pinned"):
        store.unpin(cid)


def test_unknown_cid_times_out_quickly(service) -> None:
    store = KuboStore(service.url, timeout=0.5)
    with pytest.raises(StorageTimeout) as err:  # after the client's own timeout, not Kubo's
        store.get(UNKNOWN)
    assert UNKNOWN in str(err.value) and err.value.hint
    with pytest.raises(StorageTimeout):
        store.pin(UNKNOWN)


def test_rpc_refuses_get_like_kubo(service) -> None:
    assert requests.get(f"{service.url}/api/v0/version", timeout=5).status_code == 405


def test_other_import_options_are_refused_not_ignored(service) -> None:
    r = requests.post(
        f"{service.url}/api/v0/add",
        params={"cid-version": "1"},
        files={"file": ("x", b"x")},
        timeout=5,
    )
    assert r.status_code == 400 and "cid-version" in r.json()["Message"]


def test_auth_header_is_sent_but_never_shown(service) -> None:
    store = KuboStore(service.url, headers={"Authorization": "Bearer s3cret"})
    assert "s3cret" not in repr(store)
    assert store._session.headers["Authorization"] == "Bearer s3cret"
    assert store.version()["Version"].startswith("0.22")


def test_lifecycle_persistence_and_stopped_service_error(
    service, free_port, tmp_path: Path
) -> None:
    port = free_port()
    repo = tmp_path / "repo"
    up = storage_up(port=port, repo=repo)
    try:
        assert up["running"] and alive(up["pid"])
        store = KuboStore(up["url"], timeout=2)
        cid = store.put(b"survives a restart")
        down = storage_down(port)
        assert down == {"stopped": True, "pid": up["pid"]}
        assert not alive(up["pid"])
        assert storage_status(port) == {"url": up["url"], "pid": None, "running": False}
        with pytest.raises(StorageUnavailable) as err:
            store.get(cid)
        assert "dfml storage up" in err.value.hint
        again = storage_up(port=port, repo=repo)
        assert again["pid"] != up["pid"]
        assert store.get(cid) == b"survives a restart" and store.is_pinned(cid)
    finally:
        storage_down(port)
    assert storage_down(port) == {"stopped": True, "pid": None}
    assert service.pid != up["pid"] and alive(service.pid)  # only the recorded pid was stopped


def test_the_pin_ledger_is_journaled_and_replayed_after_a_restart(free_port, tmp_path) -> None:
    """Each pin change appends one line to the ledger's journal (the snapshot is not
    rewritten per add: that made an add cost time in proportion to every earlier pin); a
    restart replays the journal, ignoring a torn last line, into a new snapshot."""
    import json

    port = free_port()
    repo = tmp_path / "repo"
    up = storage_up(port=port, repo=repo)
    try:
        store = KuboStore(up["url"], timeout=5)
        cids = [store.put(f"pin {i}".encode()) for i in range(5)]
        store.unpin(cids[0])
        journal = (repo / "dfml-pins.log").read_text().splitlines()
        assert journal == [f"+{c}" for c in cids] + [f"-{cids[0]}"]
        storage_down(port)
        with (repo / "dfml-pins.log").open("a") as f:
            f.write("+Qm")  # a line cut short by a killed process: not a pin
        storage_up(port=port, repo=repo)
        assert [store.is_pinned(c) for c in cids] == [False, True, True, True, True]
        assert json.loads((repo / "dfml-pins.json").read_text()) == sorted(cids[1:])
        assert not (repo / "dfml-pins.log").exists()
    finally:
        storage_down(port)
