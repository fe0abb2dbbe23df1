"""`python -m tf_autoseg.data_service`: a tf.data service dispatcher and workers.

The library is `tf_autoseg.data.service`; this module holds the flags and `main`.
"""

import signal
import sys
import threading

from tf_autoseg.cli import commands


def main(argv):
    from absl import flags

    from tf_autoseg.data.service import start  # loads TensorFlow: after the flags

    # The servers' join() blocks in C++, where Python never sees a signal: wait in Python
    # instead, so that SIGTERM and Ctrl-C stop the servers and end the process cleanly. The
    # handlers come first: a signal at any moment after the address is printed is handled.
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    values = flags.FLAGS
    service = start(values.port, values.workers, values.dispatcher, values.worker_host)
    try:
        where = service.address or f"grpc://{values.dispatcher}"
        print(f"tf.data service: {len(service.workers)} worker(s) for {where}", flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        service.stop()
    print("tf.data service: stopped", flush=True)


def _define_flags():
    from absl import flags

    flags.DEFINE_integer("port", 5050, "The dispatcher's port.")
    flags.DEFINE_integer("workers", 2, "Worker servers started in this process.")
    flags.DEFINE_string("dispatcher", None, "host:port of a dispatcher elsewhere: workers only.")
    flags.DEFINE_string("worker_host", "localhost", "The name other machines reach this one by.")


def run():
    """Defines the flags and runs `main` as the program."""
    _define_flags()
    commands.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
