"""Named classes: the classes.json checks, versioned saves, and the naming page's server.

The server is driven here over HTTP with a sample labelled by a stand-in predictor (known
cluster maps, no model); tests/serving/test_name_clusters.py drives the program and the page.
"""

import http.client
import json
import re
import threading

import numpy as np
import pytest

from tf_autoseg.serving import classes
from tf_autoseg.serving import naming
from tf_autoseg.serving import page_server

MAPPING = {
    "head": "main",
    "num_clusters": 5,
    "classes": [
        {"name": "road", "colour": "#804080", "clusters": [0, 3]},
        {"name": "sky", "clusters": [1]},
        {"name": "tree", "colour": "#00FF00", "clusters": [4]},
    ],
    "ignored": [2],
}


def _with(**changes):
    value = json.loads(json.dumps(MAPPING))
    value.update(changes)
    return value


def test_a_mapping_gives_each_cluster_its_class_id_and_ignored_ones_the_ignore_id():
    mapped = classes.parse(MAPPING, num_clusters=5)
    np.testing.assert_array_equal(mapped.lookup(), [0, 1, 255, 0, 2])
    assert [c.name for c in mapped.classes] == ["road", "sky", "tree"]
    assert mapped.classes[2].colour == "#00ff00"
    assert mapped.classes[1].colour == classes.default_colour(1)  # the palette's, by default
    np.testing.assert_array_equal(mapped.palette()[0], [0x80, 0x40, 0x80])
    assert classes.parse(mapped.to_json(), num_clusters=5) == mapped  # round trip


@pytest.mark.parametrize(
    "value, message",
    [
        (_with(num_clusters=4), "for 4 clusters but the model's main head has 5"),
        (_with(classes=[{"name": "road", "clusters": [0, 3, 7]}]), "cluster 7, which the model"),
        (
            _with(
                classes=[
                    {"name": "road", "clusters": [0, 1]},
                    {"name": " ROAD", "clusters": [3, 4]},
                ]
            ),
            'two classes are named "ROAD"',
        ),
        (
            _with(classes=[*MAPPING["classes"], {"name": "water", "clusters": []}]),
            'class "water" has no cluster',
        ),
        (_with(ignored=[2, 3]), 'cluster 3 is in both class "road" and "ignored"'),
        (_with(ignored=[]), "cluster 2 is in no class and not ignored"),
        (_with(classes=[{"name": "road", "colour": "red", "clusters": [0, 1, 3, 4]}]), "#rrggbb"),
        (_with(classes=[{"name": "", "clusters": [0, 1, 3, 4]}]), 'needs a non-empty "name"'),
        (_with(head="overclustering"), "for the overclustering head, not the main head"),
        (_with(classes=[{"name": "a", "clusters": ["0"]}]), "cluster ids must be ints"),
    ],
)
def test_a_bad_mapping_is_named_in_one_line(value, message):
    with pytest.raises(ValueError) as caught:
        classes.parse(value, num_clusters=5, head="main")
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith("classes.json: ")


@pytest.mark.parametrize(
    "value, message",
    [
        (_with(classes=[{"name": "road", "color": "#804080", "clusters": [0, 1, 2, 3, 4]}]),
         'classes[0] has the key "color", which a mapping does not take: write "colour"'),
        (_with(ignore=[2]), 'the mapping has the key "ignore", which a mapping does not take: '
         'write "ignored"'),
        (_with(comment="mine"), 'the mapping has the key "comment", which a mapping does not '
         'take: expected "format"'),
    ],
)  # fmt: skip
def test_a_misspelt_key_is_refused_rather_than_its_value_replaced(tmp_path, value, message):
    # "color" was "ok", and the class drawn in the palette's colour instead of the one given.
    path = tmp_path / "classes.json"
    path.write_text(json.dumps(value))
    with pytest.raises(ValueError, match=re.escape(f"{path}: {message}")):
        classes.read(path)


def test_a_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"^{path}: not JSON"):
        classes.read(path)
    with pytest.raises(ValueError, match="cannot be read"):
        classes.read(tmp_path / "missing.json")


def test_the_pages_choices_merge_clusters_that_share_a_name():
    entries = [
        {"cluster": 3, "name": "Road ", "colour": "#111111"},
        {"cluster": 0, "name": "road", "colour": "#222222"},
        {"cluster": 1, "name": "sky", "colour": "#333333"},
        {"cluster": 2, "name": "", "ignored": True},
        {"cluster": 4, "name": "sky", "colour": "#444444"},
    ]
    mapped = classes.from_clusters(entries, 5)
    assert [(c.id, c.name, c.colour, c.clusters) for c in mapped.classes] == [
        (0, "road", "#222222", (0, 3)),  # the name and colour of its lowest cluster
        (1, "sky", "#333333", (1, 4)),
    ]
    assert mapped.ignored == (2,)
    with pytest.raises(ValueError, match="cluster 2 has no name"):
        classes.from_clusters([*entries[:3], {"cluster": 2, "name": ""}, entries[4]], 5)


def test_saving_again_keeps_class_ids_and_the_ignore_id():
    previous = classes.parse({**MAPPING, "ignore_id": 200, "classes": [
        {"id": 7, "name": "road", "clusters": [0, 3]}, {"id": 2, "name": "sky", "clusters": [1]},
        {"id": 0, "name": "tree", "clusters": [4]}]})  # fmt: skip
    entries = [  # cluster 4 moves from "tree" to a new class; "tree" is gone
        {"cluster": 0, "name": "road"}, {"cluster": 1, "name": "Sky"},
        {"cluster": 2, "ignored": True}, {"cluster": 3, "name": "road"},
        {"cluster": 4, "name": "water"},
    ]  # fmt: skip
    mapped = classes.from_clusters(entries, 5, previous=previous)
    assert {c.name: c.id for c in mapped.classes} == {"road": 7, "Sky": 2, "water": 0}
    assert mapped.ignore_id == 200 and mapped.lookup().tolist() == [7, 2, 200, 7, 0]
    assert (mapped.palette()[200] == 0).all()  # ignored pixels are drawn black


@pytest.mark.parametrize(
    "value, message",
    [
        ({"classes": [{"name": "a", "clusters": 7}]}, "has no cluster"),
        ({"classes": [{"name": "a", "clusters": [0]}], "ignored": 3}, '"ignored" must be a list'),
        ({"classes": [{"name": "a", "clusters": [0]}], "ignore_id": 1000}, "in [1, 255]"),
        ({"classes": [{"name": "a", "clusters": [0]}], "num_clusters": 10**9}, "in [1, 65536]"),
    ],
)
def test_a_malformed_file_without_a_count_is_one_line_not_a_traceback(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        classes.parse(value)


def test_two_mapping_files_in_one_folder_keep_separate_histories(tmp_path):
    first = classes.save(tmp_path / "a.classes.json", classes.parse(MAPPING))
    second = classes.save(tmp_path / "b.classes.json", classes.parse(MAPPING))
    assert (first.version, second.version) == (1, 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.classes.history", "a.classes.json", "b.classes.history", "b.classes.json",
    ]  # fmt: skip


def test_every_save_is_a_new_version_and_the_file_is_the_latest(tmp_path):
    path = tmp_path / "run" / "classes.json"
    path.parent.mkdir()
    first = classes.save(path, classes.parse(MAPPING))
    renamed = _with(classes=[{**MAPPING["classes"][0], "name": "street"}, *MAPPING["classes"][1:]])
    second = classes.save(path, classes.parse(renamed))
    assert (first.version, second.version) == (1, 2)
    assert classes.read(path) == second
    history = classes.history_folder(path)
    assert history == path.parent / "classes.history"
    assert sorted(p.name for p in history.iterdir()) == ["1.json", "2.json"]
    assert classes.read(history / "1.json") == first
    assert not [p for p in path.parent.rglob(".*")]  # no temporary file left


def test_saves_at_the_same_moment_take_different_versions(tmp_path):
    path = tmp_path / "classes.json"
    mapped = classes.parse(MAPPING)
    versions = []
    threads = [
        threading.Thread(target=lambda: versions.append(classes.save(path, mapped).version))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(versions) == list(range(1, 9))
    assert len(list(classes.history_folder(path).glob("*.json"))) == 8


def test_the_mapping_lives_beside_the_model(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"")
    assert classes.default_path(run) == run / "classes.json"
    assert classes.default_path(run / "model.keras") == run / "classes.json"
    (tmp_path / "other.keras").write_bytes(b"")
    assert classes.default_path(tmp_path / "other.keras") == tmp_path / "other.classes.json"
    version = tmp_path / "saved_models" / "seg" / "3"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    base = version.parent
    assert classes.default_path(version) == base / "classes.json"
    assert classes.default_path(base) == base / "classes.json"


# ------------------------------------------------------------------ the page's server
KNOWN = 4  # clusters of the stand-in


def _labels(image):
    """The stand-in predictor: cluster 0 top half, 1 bottom-left, 2 bottom-right; 3 absent."""
    height, width = image.shape[:2]
    labels = np.zeros((height, width), np.int32)
    labels[height // 2 :, : width // 2] = 1
    labels[height // 2 :, width // 2 :] = 2
    return labels


@pytest.fixture
def served(tmp_path):
    files = [tmp_path / f"{i}.png" for i in range(3)] + [tmp_path / "broken.png"]

    def read(path):
        if path.name == "broken.png":
            raise ValueError(f"{path}: cannot be decoded")
        return np.full((40, 60, 3), 100, np.uint8)

    sample = naming.ClusterSample(files, KNOWN, display_side=32)
    naming.compute(sample, read, _labels)
    session = naming.Session(sample, "main", "stand-in", tmp_path / "run" / "classes.json", "x")
    (tmp_path / "run").mkdir()
    server = naming.make_server("127.0.0.1", 0, session)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, session
    server.shutdown()
    server.server_close()


def _request(server, method, path, body=None, headers=None):
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
    connection.request(method, path, body=body, headers=headers or {})
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response.status, response.getheader("Content-Type"), payload


def test_the_server_answers_each_clusters_share_and_patches(served):
    server, _ = served
    status, kind, body = _request(server, "GET", "/api/state")
    state = json.loads(body)
    assert status == 200 and kind == "application/json" and state["ready"]
    shares = [c["share"] for c in state["clusters"]]
    np.testing.assert_allclose(shares, [0.5, 0.25, 0.25, 0.0])
    assert [c["patches"] for c in state["clusters"]] == [3, 3, 3, 0]
    assert len(state["skipped"]) == 1 and "broken.png: cannot be decoded" in state["skipped"][0]
    assert state["sizes"] == [[21, 32]] * 3  # 40 x 60 shrunk to a 32-pixel side
    status, kind, png = _request(server, "GET", "/patch/1/0.png")
    assert status == 200 and kind == "image/png" and png.startswith(b"\x89PNG")
    status, _, page = _request(server, "GET", "/")
    assert status == 200 and b"Name the clusters" in page


def test_an_image_that_fails_to_label_is_skipped_and_the_others_kept(tmp_path):
    def predict(image):
        if image[0, 0, 0] == 1:
            raise MemoryError("too large")
        return _labels(image)

    files = [tmp_path / f"{i}.png" for i in range(3)]
    sample = naming.ClusterSample(files, KNOWN, display_side=32)
    naming.compute(sample, lambda path: np.full((8, 8, 3), int(path.stem), np.uint8), predict)
    assert sample.ready and len(sample.images) == 2
    assert sample.skipped == [(str(files[1]), "MemoryError: too large")]


def test_patches_outline_their_cluster():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    out = naming.outlined(np.full((6, 6, 3), 200, np.uint8), mask)
    assert (out[1, 1] == (255, 230, 0)).all() and (out[2, 2] == 200).all()  # border, inside
    assert (out[0, 0] == 90).all()  # outside: dimmed


@pytest.mark.parametrize(
    "path",
    [
        "/../../etc/passwd",
        "/image/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/image/3.png",  # the broken file: not in the sample
        "/patch/3/0.png",  # a cluster absent from the sample has no patch
        "/patch/9/0.png",
        "/labels/-1.png",
        "/etc/passwd",
    ],
)
def test_nothing_outside_the_sample_is_served(served, path):
    status, _, body = _request(served[0], "GET", path)
    assert status == 404 and b"root:" not in body


def test_a_page_from_another_host_name_is_refused(served):
    # DNS rebinding: a page of evil.example resolving to 127.0.0.1 reaches the server with
    # its own name in Host.
    status, _, _ = _request(served[0], "GET", "/api/state", headers={"Host": "evil.example"})
    assert status == 403


def _choices(names):
    return {
        "clusters": [
            {"cluster": k, "name": name or "", "colour": "#102030", "ignored": name is None}
            for k, name in enumerate(names)
        ]
    }


def test_a_save_writes_the_mapping_and_state_shows_it(served):
    server, session = served
    body = json.dumps(_choices(["sky", "road", "road", None]))
    status, _, answer = _request(
        server, "POST", "/api/classes", body, {"Content-Type": "application/json"}
    )
    assert status == 200, answer
    saved = classes.read(session.classes_path, num_clusters=KNOWN)
    assert [(c.name, c.clusters) for c in saved.classes] == [("sky", (0,)), ("road", (1, 2))]
    assert saved.ignored == (3,) and saved.version == 1
    state = json.loads(_request(server, "GET", "/api/state")[2])
    assert state["saved"] == saved.to_json()


def test_a_save_from_the_page_keeps_the_saved_class_ids(served):
    server, session = served
    classes.save(session.classes_path, classes.parse({
        "head": "main", "num_clusters": 4, "ignore_id": 99,
        "classes": [{"id": 4, "name": "sky", "clusters": [0]},
                    {"id": 9, "name": "road", "clusters": [1, 2, 3]}],
    }))  # fmt: skip
    body = json.dumps(_choices(["sky", "road", "road", None]))
    status, _, answer = _request(
        server, "POST", "/api/classes", body, {"Content-Type": "application/json"}
    )
    assert status == 200, answer
    saved = classes.read(session.classes_path)
    assert saved.version == 2 and saved.lookup().tolist() == [4, 9, 9, 99]


@pytest.mark.parametrize(
    "body, headers, status",
    [
        (_choices(["a", "b", "c", "d"]), {"Content-Type": "text/plain"}, 415),
        (
            _choices(["a", "b", "c", "d"]),
            {"Content-Type": "application/json", "Origin": "http://evil.example"},
            403,
        ),
        (_choices(["a", "b", "", "d"]), {"Content-Type": "application/json"}, 400),
        (_choices(["a", "b"]), {"Content-Type": "application/json"}, 400),
        ({"clusters": [None, 1, 2, 3]}, {"Content-Type": "application/json"}, 400),
        (
            {"clusters": [{"cluster": None, "name": "a"}] * 4},
            {"Content-Type": "application/json"},
            400,
        ),
        (
            _choices(["a", "b", "c", "d"]),
            {"Content-Type": "application/json", "Content-Length": "lots"},
            400,
        ),  # fmt: skip
    ],
)
def test_a_bad_save_writes_nothing(served, body, headers, status):
    server, session = served
    answer = _request(server, "POST", "/api/classes", json.dumps(body), headers)
    assert answer[0] == status
    assert not session.classes_path.exists()
    assert not list(session.classes_path.parent.iterdir())


# ------------------------------------------------------------------ issue 26: what a save keeps
def test_a_hand_edited_file_is_kept_in_the_history_before_a_save_replaces_it(tmp_path):
    path = tmp_path / "classes.json"
    classes.save(path, classes.parse(MAPPING))
    for edited in (
        '{"classes": [{"name": "road", "clusters": [0, 3',
        json.dumps(_with(ignored=[])),
    ):
        path.write_text(edited)  # by hand: broken JSON, then a valid file that is no version
        saved = classes.save(path, classes.parse(MAPPING))
        kept = sorted(classes.history_folder(path).glob("replaced-*.json"))
        assert kept and kept[-1].read_text() == edited, kept
        assert classes.read(path) == saved
    classes.save(path, classes.parse(MAPPING))  # a saved version is not kept twice
    assert len(list(classes.history_folder(path).glob("replaced-*.json"))) == 2


def test_history_files_are_as_readable_as_the_mapping(tmp_path):
    path = tmp_path / "classes.json"
    saved = classes.save(path, classes.parse(MAPPING))
    version = classes.history_folder(path) / f"{saved.version}.json"
    assert version.stat().st_mode & 0o777 == path.stat().st_mode & 0o777
    assert version.stat().st_mode & 0o044  # others may read it, as they may classes.json


def test_a_file_nested_too_deeply_is_one_line(tmp_path):
    path = tmp_path / "classes.json"
    path.write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match="nested too deeply"):
        classes.read(path)


# ------------------------------------------------------------------ issue 26: the server's limits
def test_a_body_nested_too_deeply_is_refused_and_the_server_goes_on(served, capsys):
    server, session = served
    body = "[" * 100000 + "]" * 100000
    status, _, answer = _request(
        server, "POST", "/api/classes", body, {"Content-Type": "application/json"}
    )
    assert status == 400 and b"nested too deeply" in answer
    assert _request(server, "GET", "/api/state")[0] == 200
    assert "Traceback" not in capsys.readouterr().err
    assert not session.classes_path.exists()


def test_idle_connections_are_bounded_and_closed(served, monkeypatch):
    import socket
    import time

    server, _ = served
    before = threading.active_count()
    idle = [socket.create_connection(server.server_address[:2]) for _ in range(150)]
    try:
        time.sleep(1.0)
        # One thread per connection, up to the limit; the others are closed at once.
        assert threading.active_count() - before <= page_server.MAX_CONNECTIONS
    finally:
        for connection in idle:
            connection.close()
    monkeypatch.setattr(page_server, "IDLE_SECONDS", 0.5)
    quick = naming.make_server("127.0.0.1", 0, served[1])
    thread = threading.Thread(target=quick.serve_forever, daemon=True)
    thread.start()
    try:
        with socket.create_connection(quick.server_address[:2], timeout=10) as silent:
            start = time.monotonic()
            assert silent.recv(1) == b""  # closed by the server, not left open
            assert time.monotonic() - start < 5
    finally:
        quick.shutdown()
        quick.server_close()


def test_a_client_that_stops_mid_body_costs_no_traceback(served, capsys):
    import socket
    import struct
    import time

    server, session = served
    for _ in range(5):
        connection = socket.create_connection(server.server_address[:2])
        connection.sendall(
            b"POST /api/classes HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"clusters"'
        )
        # Gone at once, with a reset: what a killed client or a dropped link does.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        connection.close()
    time.sleep(1.0)
    assert _request(server, "GET", "/api/state")[0] == 200
    err = capsys.readouterr().err
    assert "Traceback" not in err and "BrokenPipe" not in err and "ConnectionReset" not in err
    assert not session.classes_path.exists()


def test_off_loopback_the_page_answers_only_its_own_names(served):
    import socket

    session = served[1]
    server = naming.make_server("0.0.0.0", 0, session)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:

        def ask(method, host, origin=None, path="/api/state", body=None):
            headers = {"Host": f"{host}:{port}", "Content-Type": "application/json"}
            if origin:
                headers["Origin"] = origin
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request(method, path, body=body, headers=headers)
            status = connection.getresponse().status
            connection.close()
            return status

        own = socket.gethostname()
        assert ask("GET", own) == 200 and ask("GET", "localhost") == 200
        assert ask("GET", "evil.example") == 403  # DNS rebinding, off loopback too
        save = json.dumps(_choices(["sky", "road", "road", None]))
        assert ask("POST", "evil.example", "http://evil.example", "/api/classes", save) == 403
        assert ask("POST", own, "http://evil.example", "/api/classes", save) == 403
        assert ask("POST", own, f"http://evil.example:{port}", "/api/classes", save) == 403
        assert not session.classes_path.exists()
        assert ask("POST", own, f"http://{own}:{port}", "/api/classes", save) == 200
    finally:
        server.shutdown()
        server.server_close()


def test_the_names_a_page_answers_to():
    import socket

    assert page_server.host_names("127.0.0.1") == {"127.0.0.1", "localhost", "::1"}
    assert socket.gethostname().lower() not in page_server.host_names("127.0.0.1")
    everywhere = page_server.host_names("0.0.0.0")
    assert {"localhost", socket.gethostname().lower()} <= everywhere
    assert "0.0.0.0" not in everywhere and "evil.example" not in everywhere
    assert page_server.is_loopback("127.0.0.2") and page_server.is_loopback("[::1]")
    assert not page_server.is_loopback("0.0.0.0") and not page_server.is_loopback("10.1.2.3")
