"""The embedded broker (filesystem://) hands over whole messages while publishers and a worker race."""

from __future__ import annotations

import threading

from kombu import Connection

import portal.celery  # noqa: F401 - puts portal.broker behind filesystem://
from portal.broker import Transport


def _connection(folder) -> Connection:
    return Connection(
        "filesystem://",
        transport_options={"data_folder_in": str(folder), "data_folder_out": str(folder)},
    )


def test_the_filesystem_scheme_is_the_atomic_transport(tmp_path):
    with _connection(tmp_path) as conn:
        assert isinstance(conn.transport, Transport)


def test_a_consumer_racing_publishers_gets_every_message_whole(tmp_path):
    count = 400
    with _connection(tmp_path) as producer_conn, _connection(tmp_path) as consumer_conn:
        queue_out = producer_conn.SimpleQueue("race")
        queue_in = consumer_conn.SimpleQueue("race")

        def publish() -> None:
            for n in range(count):
                queue_out.put({"n": n, "pad": "x" * 2000})

        publisher = threading.Thread(target=publish)
        publisher.start()
        received = []
        while len(received) < count:
            message = queue_in.get(block=True, timeout=30)
            received.append(message.payload["n"])
            message.ack()
        publisher.join(timeout=30)
        queue_out.close()
        queue_in.close()
    assert sorted(received) == list(range(count))
    assert not list(tmp_path.glob("*.partial"))
