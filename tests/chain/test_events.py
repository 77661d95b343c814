"""The fast event decoder (chain/events.py) reads every block's events exactly as scalecodec
does, on the real dev chain: proxied remarks in a batch, transfers, a batch interrupted by a
failing call, a proxy call refused, an atomic batch that failed, a multisig opened and
executed, a proxy added."""

from __future__ import annotations

from scalecodec.base import ScaleBytes
from substrateinterface.utils.hasher import xxh128

from decentralml_jupyter.chain.events import EventDecoder

UNIT = 10**12


def test_the_fast_event_decoder_reads_what_scalecodec_reads(chain):
    a = {n: chain.address(f"//{n}") for n in ("Dev1", "Dev2", "Dev3", "Dev4")}
    chain.submit("//Dev4", chain.add_proxy_call(a["Dev1"]))
    first = chain.block_number()
    remark = chain.remark_call(b"z" * 80)
    chain.submit("//Dev1", chain.batch_call([chain.proxy_call(a["Dev4"], remark)] * 50))
    chain.transfer("//Dev1", a["Dev3"], UNIT)
    too_much = chain.transfer_call(a["Dev2"], 10**30, keep_alive=False)
    chain.submit("//Dev1", chain.batch_call([remark, too_much]), check=False)
    chain.submit("//Dev1", chain.proxy_call(a["Dev3"], remark), check=False)  # not its proxy
    chain.submit("//Dev1", chain.batch_all_call([remark, too_much]), check=False)
    signers = [a["Dev1"], a["Dev2"], a["Dev3"]]
    pay = chain.transfer_call(a["Dev3"], UNIT)
    chain.transfer("//Dev3", chain.multisig_address(signers, 2), 100 * UNIT)
    chain.multisig_approve("//Dev1", pay, signers, 2)
    chain.multisig_approve("//Dev2", pay, signers, 2)
    sub = chain.substrate
    item = sub.metadata.get_metadata_pallet("System").get_storage_function("Events")
    decoder = EventDecoder(sub.metadata.portable_registry.value["types"], chain.ss58_format)
    key = "0x" + (xxh128(b"System") + xxh128(b"Events")).hex()
    kinds = set()
    for n in range(first, chain.block_number() + 1):
        raw = chain._rpc("state_getStorage", [key, chain.block_hash(n)])
        fast = decoder.decode(bytes.fromhex(raw[2:]), item.value["type"]["Plain"])
        chain._decoded_events.clear()
        chain._event_decoders[sub.runtime_version] = (None, 0)  # make the client use scalecodec
        reference = chain._decode_events(sub.runtime_version, raw, ScaleBytes)
        chain._event_decoders.clear()
        assert fast == reference
        kinds |= {(e["module"], e["event"]) for e in fast}
    assert {
        ("Proxy", "ProxyExecuted"),
        ("Utility", "BatchInterrupted"),
        ("System", "ExtrinsicFailed"),
        ("Multisig", "NewMultisig"),
        ("Multisig", "MultisigExecuted"),
        ("Balances", "Transfer"),
    } <= kinds
