"""`python -m tf_autoseg.data_service`: a tf.data service dispatcher and workers.

The library is `tf_autoseg.data.service`; this module holds the flags and `main`.
"""

import signal
import sys
import threading

from tf_autoseg.cli import commands


def main(argv):
    from absl import flags

    from tf_autoseg import arguments
    from tf_autoseg.data import service as data_service

    if len(argv) > 1:
        raise ValueError(f"unexpected arguments: {' '.join(argv[1:])}")
    values = flags.FLAGS
    # Every value, and that the port is free, before anything starts: gRPC would take a port
    # modulo 65536, fail with a traceback on -1, and share a port already serving.
    if values.dispatcher is None:
        data_service.check_port(values.port)
        arguments.integer("workers", values.workers, 0)
    else:
        data_service.check_dispatcher(values.dispatcher)
        arguments.integer("workers", values.workers)  # workers only: at least one
    commands.start_tensorflow()  # quiet, as every program

    # The servers' join() blocks in C++, where Python never sees a signal: wait in Python
    # instead, so that SIGTERM and Ctrl-C stop the servers and end the process cleanly. The
    # handlers come first: a signal at any moment after the address is printed is handled.
    stopping = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stopping.set())
    service = data_service.start(values.port, values.workers, values.dispatcher, values.worker_host)
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

    flags.DEFINE_integer(
        "port", 5050, "The dispatcher's port, in [1, 65535] and free; 0: any free one."
    )
    flags.DEFINE_integer(
        "workers", 2, "Worker servers started in this process (>= 0; >= 1 with --dispatcher)."
    )
    flags.DEFINE_string("dispatcher", None, "host:port of a dispatcher elsewhere: workers only.")
    flags.DEFINE_string("worker_host", "localhost", "The name other machines reach this one by.")


def run():
    """Defines the flags and runs `main` as the program."""
    _define_flags()
    commands.run(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
