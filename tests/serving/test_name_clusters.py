"""`python -m tf_autoseg.name_clusters`: the program, its bad inputs, and the page in Chromium.

The browser test drives Debian's chromium through chromedriver with selenium (`.ci/run`
installs both); without them it skips, saying what is missing. Its screenshot is kept in the
test's run directory (`name_clusters.png`), and copied to `$TF_AUTOSEG_ARTIFACTS` when set.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tf_autoseg.cli import name_clusters
from tf_autoseg.serving import classes

CLUSTERS = 4
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A run directory holding a small untrained model (4 clusters, 6 overclustering)."""
    from tf_autoseg import AutoSegModel

    model = AutoSegModel.variant(
        "F2", CLUSTERS, (16, 16, 3), width=8, attention_heads=2, stride=2, ar_blocks=2,
        attention_blocks=(1,), overclustering=6,
    )  # fmt: skip
    model(np.zeros((1, 16, 16, 3), np.float32))
    run = tmp_path_factory.mktemp("run")
    model.save(run / "model.keras")
    return run


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(6):
        image = np.zeros((48, 64, 3), np.uint8)
        image[:24] = (40, 90, 200)  # a sky
        image[24:] = (60, 140, 50)  # a field
        image[:, 20 + 4 * i : 28 + 4 * i] = (120, 80, 40)  # a pole
        image = np.clip(image + rng.integers(-20, 20, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"scene_{i}.png")
    return folder


def _run(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "tf_autoseg.name_clusters", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _start(*args):
    """Starts the program; returns (process, url) once it prints where it listens."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tf_autoseg.name_clusters", "--port=0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if "open http://" in line:
            process.started_line = line
            return process, line.split("open ", 1)[1].split()[0]
        if not line and process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"the program did not start: {process.stderr.read()[-2000:]}")


def _stop(process):
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


def _state(url):
    with urllib.request.urlopen(url + "api/state", timeout=10) as response:
        return json.loads(response.read())


def _wait_ready(url):
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = _state(url)
        if state["ready"] or state["error"]:
            return state
        time.sleep(0.3)
    raise AssertionError("the sample was not labelled in time")


def _other_address():
    """A non-loopback address of this machine, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 1))  # UDP: nothing is sent
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_the_program_serves_on_loopback_only_and_stops_on_sigterm(model_dir, image_dir):
    process, url = _start(f"--model={model_dir}", f"--images={image_dir}", "--head=overclustering")
    try:
        assert url.startswith("http://127.0.0.1:")
        state = _wait_ready(url)
        assert state["error"] is None and state["head"] == "overclustering"
        assert state["num_clusters"] == 6 and len(state["clusters"]) == 6
        assert abs(sum(c["share"] for c in state["clusters"]) - 1) < 1e-6
        other = _other_address()
        if other is not None:
            port = int(url.rsplit(":", 1)[1].strip("/"))
            with pytest.raises(OSError):
                socket.create_connection((other, port), timeout=3).close()
    finally:
        code, out, _ = _stop(process)
    assert code == 0 and "stopped" in out
    assert not (model_dir / "classes.json").exists()  # nothing saved, nothing written


def test_bad_inputs_are_one_line_exit_2_and_nothing_written(model_dir, image_dir, tmp_path):
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "a.png").write_bytes(b"not a picture")
    (unreadable / "b.jpg").write_bytes(b"\xff\xd8 broken")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"classes": [{"name": "road", "clusters": [0, 1, 2, 3, 9]}]}))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    # A page already running on the default port (8765) must not change what these say: each
    # case takes a free port.
    default_port = _hold(8765)
    cases = {
        "not a model": (
            [f"--model={not_a_model}", f"--images={image_dir}", "--port=0"],
            "holds no model.keras",
        ),
        "no readable image": (
            [f"--model={model_dir}", f"--images={unreadable}", "--port=0"],
            "none of the 2 sampled images (of 2) can be read",
        ),
        "no image at all": (
            [f"--model={model_dir}", f"--images={not_a_model}", "--port=0"],
            "No image files",
        ),
        "port in use": (
            [f"--model={model_dir}", f"--images={image_dir}", f"--port={busy.getsockname()[1]}"],
            f"--port={busy.getsockname()[1]}: cannot listen",
        ),
        "off loopback without consent": (
            [f"--model={model_dir}", f"--images={image_dir}", "--host=0.0.0.0", "--port=0"],
            "--host=0.0.0.0 is not a loopback address",
        ),
        "no such address": (
            [f"--model={model_dir}", f"--images={image_dir}", "--host=999.1.1.1", "--port=0",
             "--allow_network"],
            "--host=999.1.1.1: not an address of this machine",
        ),
        "unknown cluster": (
            [f"--model={model_dir}", f"--check_classes={wrong}"],
            "names cluster 9, which the model lacks",
        ),
        "mapping under a file": (
            [f"--model={model_dir}", f"--images={image_dir}", "--head=overclustering",
             "--classes_json=" + str(tmp_path / "deep" / "file.json" / "x"), "--port=0"],
            "--classes_json",
        ),
    }  # fmt: skip
    before = sorted(p.name for p in model_dir.iterdir())
    try:
        for name, (args, message) in cases.items():
            if name == "mapping under a file":
                (tmp_path / "deep").mkdir()
                (tmp_path / "deep" / "file.json").write_text("{}")
            result = _run(*args)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 2, (name, result.stderr[-2000:])
            assert message in lines[-1] and lines[-1].startswith("error: "), (name, lines)
            assert "Traceback" not in result.stderr, name
    finally:
        busy.close()
        if default_port is not None:
            default_port.close()
    assert sorted(p.name for p in model_dir.iterdir()) == before
    assert not (unreadable / "classes.json").exists()


def _hold(port):
    """A socket listening on 127.0.0.1:`port`, or None where something already does."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen()
    except OSError:
        holder.close()
        return None
    return holder


def test_off_loopback_the_program_says_the_page_is_reachable_from_the_network(model_dir, image_dir):
    process, url = _start(
        f"--model={model_dir}", f"--images={image_dir}", "--host=0.0.0.0", "--allow_network"
    )
    try:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert url == f"http://{socket.getfqdn()}:{port}/"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/state", headers={"Host": f"evil.example:{port}"}
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403  # another name: refused off loopback too
        assert _state(f"http://127.0.0.1:{port}/")["head"] == "main"
    finally:
        code, out, _ = _stop(process)
    assert code == 0
    assert "REACHABLE FROM THE NETWORK" in process.started_line, process.started_line


def test_the_other_heads_saved_mapping_is_not_replaced(model_dir, image_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    mapping = {"head": "main", "classes": [{"name": "all", "clusters": [0, 1, 2, 3]}]}
    (run / "classes.json").write_text(json.dumps(mapping))
    result = _run(f"--model={run}", f"--images={image_dir}", "--head=overclustering", "--port=0")
    assert result.returncode == 2
    assert "holds the main head's mapping" in result.stderr.strip().splitlines()[-1]
    assert json.loads((run / "classes.json").read_text()) == mapping


def test_a_mapping_written_by_hand_is_checked_against_the_model(model_dir, tmp_path):
    path = tmp_path / "classes.json"
    mapping = {
        "head": "overclustering",
        "num_clusters": 6,
        "classes": [{"name": "road", "clusters": [0, 5]}, {"name": "sky", "clusters": [1, 2]}],
        "ignored": [3, 4],
    }
    path.write_text(json.dumps(mapping))
    result = _run(f"--model={model_dir}", f"--check_classes={path}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ok: 2 classes over the 6 clusters of the overclustering head" in result.stdout
    assert "road #" in result.stdout and "<- clusters 0, 5" in result.stdout
    assert result.stdout.strip() == name_clusters.describe(classes.parse(mapping, 6))
    path.write_text(json.dumps({**mapping, "head": "main"}))
    result = _run(f"--model={model_dir}", f"--check_classes={path}")
    assert result.returncode == 2
    assert "for 6 clusters but the model's main head has 4" in result.stderr


def _browser(tmp_path):
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip install -e '.[test]')")
    if missing:
        pytest.skip(
            f"needs {', '.join(missing)}: apt-get install chromium chromium-driver "
            "(.ci/run installs them)"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium-manager: never download a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_the_page_names_and_merges_clusters_and_shows_them_again(model_dir, image_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from selenium.webdriver.support.ui import WebDriverWait

    driver = _browser(tmp_path)
    run = tmp_path / "run"
    shutil.copytree(model_dir, run)
    process, url = _start(f"--model={run}", f"--images={image_dir}")
    try:

        def ready():
            driver.get(url)
            WebDriverWait(driver, 120).until(
                lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
            )
            return {
                int(card.get_attribute("data-cluster")): card
                for card in driver.find_elements(By.CSS_SELECTOR, ".card")
            }

        def visible(element):
            # The header is sticky: an element scrolled to the top would sit under it.
            driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
            return element

        cards = ready()
        assert sorted(cards) == list(range(CLUSTERS))  # one card per cluster
        assert len(driver.find_elements(By.CSS_SELECTOR, "#overlays canvas")) == 6
        visible(cards[0].find_element(By.CSS_SELECTOR, ".name")).send_keys("sky")
        visible(cards[1].find_element(By.CSS_SELECTOR, ".name")).send_keys("road")
        Select(visible(cards[2].find_element(By.CSS_SELECTOR, ".merge"))).select_by_value("1")
        visible(cards[3].find_element(By.CSS_SELECTOR, ".ignore")).click()
        assert cards[2].find_element(By.CSS_SELECTOR, ".name").get_attribute("value") == "road"
        visible(driver.find_element(By.ID, "save")).click()
        WebDriverWait(driver, 30).until(
            lambda d: "Saved version 1" in d.find_element(By.ID, "status").text
        )
        saved = classes.read(run / "classes.json", num_clusters=CLUSTERS, head="main")
        assert [(c.name, c.clusters) for c in saved.classes] == [("sky", (0,)), ("road", (1, 2))]
        assert saved.ignored == (3,)
        # The merged clusters share one colour: the class's.
        assert saved.classes[1].colour == cards[1].find_element(
            By.CSS_SELECTOR, ".colour"
        ).get_attribute("value")

        cards = ready()  # a reload shows the saved state
        names = {
            k: c.find_element(By.CSS_SELECTOR, ".name").get_attribute("value")
            for k, c in cards.items()
        }
        assert names == {0: "sky", 1: "road", 2: "road", 3: ""}
        assert cards[3].find_element(By.CSS_SELECTOR, ".ignore").is_selected()
        assert "Saved version 1 loaded" in driver.find_element(By.ID, "status").text
        shot = run / "name_clusters.png"
        driver.save_screenshot(str(shot))
        assert Image.open(shot).size[0] >= 1000
        if os.environ.get("TF_AUTOSEG_ARTIFACTS"):
            shutil.copy(shot, Path(os.environ["TF_AUTOSEG_ARTIFACTS"]) / shot.name)
    finally:
        driver.quit()
        _stop(process)
