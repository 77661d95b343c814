"""Runs inside the isolated TFF environment (scripts/tff-env.sh): the federated task that
bench_tff.py exported, with TensorFlow Federated's build_weighted_fed_avg. Imports only numpy,
TensorFlow and TFF (their versions differ from the project's), writes a JSON of results.

Usage: .tff-venv/bin/python benchmarks/tff_task.py TASK.npz OUT.json
"""

import json
import sys
import time

import numpy as np
import tensorflow as tf
import tensorflow_federated as tff


def main(task_path: str, out_path: str) -> int:
    task = np.load(task_path)
    cfg = json.loads(str(task["config"]))
    n_clients, classes = cfg["clients"], cfg["classes"]
    parts = [task[f"part_{i}"] for i in range(n_clients)]
    x_train, y_train = task["x_train"].astype(np.float32), task["y_train"].astype(np.int32)
    x_test, y_test = task["x_test"].astype(np.float32), task["y_test"].astype(np.int32)
    init = [task[f"init_{i}"] for i in range(cfg["layers"])]

    def keras_model():
        layers = [tf.keras.Input(shape=(x_train.shape[1],))]
        layers += [tf.keras.layers.Dense(h, activation="relu") for h in cfg["hidden"]]
        layers.append(tf.keras.layers.Dense(classes, activation="softmax"))
        return tf.keras.Sequential(layers)

    def client_data(idx):
        ds = tf.data.Dataset.from_tensor_slices((x_train[idx], y_train[idx]))
        return ds.shuffle(len(idx), seed=cfg["seed"]).batch(cfg["batch_size"]).repeat(cfg["epochs"])

    spec = client_data(parts[0]).element_spec

    def model_fn():
        return tff.learning.models.from_keras_model(
            keras_model(),
            input_spec=spec,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(),
            metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
        )

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=cfg["lr"]),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=1.0),
    )
    state = process.initialize()
    state = process.set_model_weights(
        state, tff.learning.models.ModelWeights(trainable=init, non_trainable=[])
    )
    data = [client_data(p) for p in parts]
    evaluator = keras_model()
    evaluator.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = []
    for rnd in range(1, cfg["rounds"] + 1):
        t0 = time.perf_counter()
        state = process.next(state, data).state
        seconds = time.perf_counter() - t0
        process.get_model_weights(state).assign_weights_to(evaluator)
        loss, acc = evaluator.evaluate(x_test, y_test, verbose=0)
        history.append(
            {"round": rnd, "accuracy": float(acc), "loss": float(loss), "seconds": seconds}
        )
    with open(out_path, "w") as f:
        json.dump({"tff": tff.__version__, "tf": tf.__version__, "history": history}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
