"""A rendezvous for tests that start their own gloo processes, with no free-port race.

Finding a free port by binding a socket, closing it and handing the number to the workers races:
anything may take the port before rank 0 binds it again. Here the test process itself serves the
TCP store on a port the kernel picks (port 0), bound and listening before any worker starts, and
the workers join it as clients, exactly as torchrun's agent serves its workers
(``TORCHELASTIC_USE_AGENT_STORE``: ``torch.distributed``'s ``env://`` rendezvous then connects every
rank, rank 0 included, to ``MASTER_ADDR:MASTER_PORT`` instead of binding it). torchrun commands
get ``--standalone`` instead: its own store on port 0 (``--rdzv-endpoint localhost:0``).
"""
import contextlib
from datetime import timedelta
from typing import Dict, Iterator

HOST = "127.0.0.1"


@contextlib.contextmanager
def agent_store(world: int, timeout_s: int = 300) -> Iterator[Dict[str, str]]:
    """Serve a TCP store while the block runs; yields the environment the ``world`` workers need."""
    from torch.distributed import TCPStore

    store = TCPStore(HOST, 0, world_size=world, is_master=True, timeout=timedelta(seconds=timeout_s),
                     wait_for_workers=False)
    try:
        # TORCHELASTIC_RESTART_COUNT: older torch releases prefix the agent's store with the attempt
        yield {"MASTER_ADDR": HOST, "MASTER_PORT": str(store.port), "TORCHELASTIC_USE_AGENT_STORE": "True",
               "TORCHELASTIC_RESTART_COUNT": "0"}
    finally:
        del store
