"""tf.data service: a dispatcher and workers that run the input pipeline for input-bound runs.

Start the service (one dispatcher and N workers in one process; more workers on other
machines with `--dispatcher`):

    python -m tf_autoseg.data_service --port=5050 --workers=2
    python -m tf_autoseg.data_service --dispatcher=host-a:5050 --workers=4 --worker_host=host-b

then train with `--data_service=grpc://host-a:5050`: the trainer builds its pipeline as usual
(streamed or prepared: the graph it ships to the dispatcher holds file names, not pixels), and
`distribute` hands it to the service. The workers read the files themselves, so they must see
them at the same paths as the trainer. The service splits the pipeline's epochs between its
workers (`ShardingPolicy.DYNAMIC`: an epoch to a worker, every example once), which serve
batches to whichever trainer asks: the batches are those of the seed, but their order depends
on which worker answers first, so a run through the service is not bit-reproducible.
"""

import dataclasses
import errno
import re
import socket
import time

_ADDRESS = re.compile(r"^grpc://([^\s:/]+):(\d+)$")


def check_address(address):
    """Raises a ValueError naming `--data_service` unless it reads grpc://host:port."""
    if not _ADDRESS.match(str(address)):
        raise ValueError(
            f"--data_service must be grpc://host:port (the dispatcher). Received: {address!r}"
        )


def check_port(port, flag="port"):
    """Raises a ValueError naming `--flag` unless `port` is 0 (any free one) or a port in
    [1, 65535] that nothing on this machine listens on.

    gRPC servers share a port (SO_REUSEPORT), so a second dispatcher on a taken port would
    start, report success and serve nothing; a plain socket that cannot bind finds it taken.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(
            f"--{flag} must be a port in [1, 65535], or 0 for a free one. Received: {flag}={port!r}"
        )
    if port == 0:
        return
    for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
        try:
            probe = socket.socket(family, socket.SOCK_STREAM)
        except OSError:  # no IPv6 here
            continue
        with probe:
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind((address, port))
            except OSError as error:
                if error.errno == errno.EADDRNOTAVAIL:
                    continue
                raise ValueError(
                    f"--{flag}={port}: the port is in use ({error.strerror}); is a service "
                    "already running there? Stop it, or choose another --port (0: a free one)."
                ) from None


def check_dispatcher(address):
    """Raises a ValueError naming `--dispatcher` unless it reads host:port."""
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"--dispatcher must be host:port (a running dispatcher). Received: {address!r}"
        )


def wait_for_dispatcher(address, timeout=60.0, log=print, clock=time.monotonic):
    """Returns once a dispatcher accepts connections at `address`; a ValueError after `timeout`
    seconds (or at once for a host that does not resolve), naming `--data_service`.

    A trainer whose dispatcher is missing would otherwise wait silently, for ever.
    """
    check_address(address)
    host, port = _ADDRESS.match(address).groups()
    log(f"Waiting up to {timeout:g} s for the tf.data service dispatcher at {address}.")
    deadline, why = clock() + timeout, "no answer"
    while True:
        try:
            socket.getaddrinfo(host, int(port))
        except socket.gaierror as error:
            raise ValueError(
                f"--data_service={address}: the host {host!r} does not resolve ({error})."
            ) from None
        try:
            with socket.create_connection((host, int(port)), timeout=min(5.0, timeout)):
                return
        except OSError as error:
            why = error.strerror or type(error).__name__
        if clock() >= deadline:
            raise ValueError(
                f"--data_service={address}: no dispatcher answered within {timeout:g} s "
                f"(last: {why}). Start one with python -m tf_autoseg.data_service "
                f"--port={port}, or raise --data_service_timeout."
            )
        time.sleep(min(1.0, max(deadline - clock(), 0.0)))


def distribute(dataset, address, job_name=None):
    """`dataset` read through the tf.data service whose dispatcher is at `address`.

    Args:
        dataset: a pipeline whose first source is the range of its epochs (every pipeline of
            tf_autoseg), which the service splits between its workers.
        address: "grpc://host:port".
        job_name: trainers giving the same name share one job, each batch going to one of
            them (the workers of a MultiWorkerMirroredStrategy run); None: a job of its own.
    """
    import tensorflow as tf

    check_address(address)
    service = tf.data.experimental.service
    return dataset.apply(
        service.distribute(
            processing_mode=service.ShardingPolicy.DYNAMIC, service=address, job_name=job_name
        )
    )


@dataclasses.dataclass
class Service:
    """Servers started in this process; `address` is what trainers pass as --data_service."""

    dispatcher: object
    workers: list

    @property
    def address(self):
        return self.dispatcher.target if self.dispatcher is not None else None

    def stop(self):
        for server in [*self.workers, self.dispatcher]:
            if server is not None:
                server.stop()


def start(port=0, workers=2, dispatcher=None, worker_host="localhost"):
    """Starts a dispatcher (unless `dispatcher`, host:port of a running one, is given) and
    `workers` workers in this process.

    Args:
        port: the dispatcher's port (0: any free one).
        workers: worker servers to start.
        dispatcher: "host:port" of a dispatcher elsewhere; then only workers start here.
        worker_host: the name other machines reach this one by (the workers' address).

    Returns:
        A `Service`.
    """
    import tensorflow as tf

    service = tf.data.experimental.service
    server = None
    if dispatcher is None:
        server = service.DispatchServer(service.DispatcherConfig(port=port))
        dispatcher = server.target.removeprefix("grpc://")
    started = [
        service.WorkerServer(
            service.WorkerConfig(
                dispatcher_address=dispatcher, worker_address=f"{worker_host}:%port%"
            )
        )
        for _ in range(workers)
    ]
    return Service(server, started)
