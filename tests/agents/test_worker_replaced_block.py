"""A worker host whose extrinsic landed in a block the chain then replaced (a busy dev chain
can build two blocks at one height and keep the other) must not take its updates as sent:
they stay pending, to be sent again as they were uploaded. On the real dev chain, with a
receipt that names a block hash which is not the chain's at that height."""

from __future__ import annotations

import dataclasses

from decentralml_jupyter.agents.worker import Worker
from decentralml_jupyter.protocol import encoders

CID = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
ROUND = 999  # no such round: a kept block records the protocol's refusal


def test_updates_in_a_replaced_block_stay_pending(devchain_url, storage_url):
    worker = Worker(devchain_url, storage_url, "//Dev1")
    try:
        ident = worker.identities[0]
        call = worker.chain.remark_call(encoders.submit_update(ROUND, CID, 5))
        ident.pending[ROUND] = call  # uploaded and about to be sent, as a step leaves it
        submit = worker.chain.submit

        def replaced(key, extrinsic_call, **kw):
            receipt = submit(key, extrinsic_call, **kw)
            other = worker.chain.block_hash(receipt.block_number - 1)  # not the chain's there
            return dataclasses.replace(receipt, block_hash=other)

        worker.chain.submit = replaced
        assert worker.proto.replaced(replaced(worker.key, worker.chain.remark_call(b"x")))
        worker.send([(ident, "update", ROUND, call)])
        assert ROUND not in ident.done  # not taken as sent: the next step sends it again
        assert ident.pending == {ROUND: call}  # as uploaded: no training or upload again
        assert ("update", ROUND) not in ident.refused

        worker.chain.submit = submit  # a block the chain keeps
        worker.send([(ident, "update", ROUND, call)])
        assert ROUND in ident.done
        assert ident.pending == {}
        assert ("update", ROUND) in ident.refused  # the protocol's answer was read
    finally:
        worker.proto.close()
