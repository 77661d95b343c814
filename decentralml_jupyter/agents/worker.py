"""The worker: stakes on models to become eligible, and when a round selects it, trains the
global model on its private partition and submits only the weight update (a CID).

Its data never leaves this process. ``attack`` makes it a poisoner, for robustness demos.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys

import numpy as np

from ..protocol import encoders
from ..protocol.state import State
from .base import Agent, run_agent

ATTACKS = ("none", "label_flip", "scale")


class Worker(Agent):
    role = "worker"

    def __init__(
        self,
        url: str,
        storage: str,
        key: str,
        *,
        dataset: str = "digits",
        index: int = 0,
        workers: int = 1,
        partition: str = "iid",
        seed: int = 0,
        stake: int = 10 * 10**12,
        attack: str = "none",
        **kw,
    ):
        super().__init__(url, storage, key, **kw)
        from .. import fl

        if attack not in ATTACKS:
            raise ValueError(f"unknown attack {attack!r}; one of {ATTACKS}")
        self.attack = attack
        self.stake_amount = stake
        data = fl.load_dataset(dataset, seed=seed)
        scheme, _, alpha = partition.partition(":")
        parts = fl.partition(
            data.y_train, workers, scheme, float(alpha) if alpha else 0.5, seed=seed
        )
        idx = parts[index]
        self.x, self.y = data.x_train[idx], data.y_train[idx]
        if attack == "label_flip":
            self.y = (data.num_classes - 1 - self.y).astype(self.y.dtype)
        self.done: set[int] = set()
        from nacl.public import PrivateKey

        # the X25519 key for secure aggregation's pairwise masks; announced on chain
        self._secret = PrivateKey.generate()
        self.public_key = "0x" + bytes(self._secret.public_key).hex()
        self.log.info("private partition %d/%d: %d examples", index, workers, len(self.y))

    def step(self, state: State) -> None:
        if state.public_keys([self.address]).get(self.address) != self.public_key:
            self.proto.submit(self.key, encoders.announce_key(self.public_key))
        mine = {s.model_id for s in state.stakes(account=self.address) if s.amount > 0}
        for model in state.models():
            if model.status in ("proposed", "approved", "training") and model.id not in mine:
                if self.stake_amount > 0:
                    self.proto.stake(self.key, model.id, self.stake_amount)
                    self.log.info("staked %d on model %d", self.stake_amount, model.id)
        for rnd in state.rounds():
            if (
                rnd.status == "open"
                and self.address in rnd.selected
                and self.address not in rnd.submitted
                and rnd.round_id not in self.done
            ):
                self.train_and_submit(state, rnd)

    def train_and_submit(self, state: State, rnd) -> str:
        from .. import fl

        model = state.model(rnd.model_id)
        spec = self.spec(model.architecture_cid)
        base = fl.weights_from_bytes(self.store.get(rnd.base_cid))
        hints = rnd.hints
        seed = int.from_bytes(hashlib.sha256(f"{rnd.seed}:{self.address}".encode()).digest()[:4])
        new, n, metrics = fl.train_local(
            spec,
            base,
            self.x,
            self.y,
            epochs=int(hints.get("epochs", 1)),
            batch_size=int(hints.get("batch_size", 32)),
            lr=float(hints.get("learning_rate", 0.05)),
            proximal_mu=0.01 if model.strategy == "fedprox" else 0.0,
            seed=seed,
        )
        if rnd.dp:
            # the noise seed stays secret: whoever knew it could subtract the noise
            new, _ = fl.clip_and_noise(
                base,
                new,
                rnd.dp["clip_norm"],
                rnd.dp["noise_multiplier"],
                seed=secrets.randbits(63),
            )
        if self.attack == "scale":
            new = [g + np.asarray(-10.0, g.dtype) * (w - g) for g, w in zip(base, new, strict=True)]
        if model.strategy.endswith(":secure"):
            new = self.mask(state, rnd, new, n)
            if new is None:
                return ""
        cid = self.store.put(fl.weights_to_bytes(new))
        self.proto.submit(self.key, encoders.submit_update(rnd.round_id, cid, n))
        self.done.add(rnd.round_id)
        self.log.info(
            "round %d: trained on %d examples (train acc %.3f), update %s",
            rnd.round_id,
            n,
            metrics.get("train_accuracy", float("nan")),
            cid,
        )
        return cid

    def mask(self, state: State, rnd, weights, n: int):
        """``n × weights`` plus pairwise masks with every other selected worker: only the sum
        of all selected workers' updates can be read, and only once all of them submitted."""
        from .. import fl

        keys = state.public_keys(rnd.selected)
        missing = [a for a in rnd.selected if a not in keys]
        if missing:
            self.log.warning(
                "round %d: no announced key for %s; cannot mask", rnd.round_id, missing
            )
            self.done.add(rnd.round_id)
            return None
        context = f"dfml-round:{rnd.round_id}:{rnd.seed}".encode()
        seeds = {
            peer: fl.x25519_shared_seed(bytes(self._secret), bytes.fromhex(key[2:]), context)
            for peer, key in keys.items()
            if peer != self.address
        }
        return fl.mask_update(self.address, weights, seeds, weight=float(n)).layers


def build_parser(prog: str = "dfml worker") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--storage", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--index", type=int, default=0, help="this worker's partition")
    p.add_argument("--workers", type=int, default=1, help="how many partitions")
    p.add_argument("--partition", default="iid", help="iid or dirichlet:ALPHA")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stake", type=int, default=10 * 10**12)
    p.add_argument("--attack", choices=ATTACKS, default="none")
    p.add_argument("--index-db", default=None)
    p.add_argument("--poll", type=float, default=0.5)
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    worker = Worker(
        a.url,
        a.storage,
        a.key,
        dataset=a.dataset,
        index=a.index,
        workers=a.workers,
        partition=a.partition,
        seed=a.seed,
        stake=a.stake,
        attack=a.attack,
        index_db=a.index_db,
        poll=a.poll,
    )
    return run_agent(worker)


if __name__ == "__main__":
    sys.exit(main())
