"""Reference: the naive Flask server a tutorial would write, for issue #11's "≥ 25× Flask" ratio.

Flask's own threaded server, the standard ``json`` module through ``request.get_json``, the model
called per request under a lock (TF functions are thread-safe, but this is what the tutorials do),
``jsonify`` on the answer.

    python bench/reference/naive_flask.py --model-dir examples/models/half_plus_two/00000123 --port 8602
"""

from __future__ import annotations

import argparse
import logging
import threading

import numpy as np
import tensorflow as tf
from flask import Flask, jsonify, request


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    model = tf.saved_model.load(args.model_dir)
    function = model.signatures["serving_default"]
    (input_name, spec), = function.structured_input_signature[1].items()
    lock = threading.Lock()
    app = Flask(__name__)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    @app.post("/v1/models/<name>:predict")
    def predict(name: str) -> object:
        rows = np.array(request.get_json()["instances"], spec.dtype.as_numpy_dtype)
        with lock:
            outputs = function(**{input_name: tf.constant(rows)})
        (value,) = outputs.values() if len(outputs) == 1 else (None,)
        if value is not None:
            return jsonify(predictions=value.numpy().tolist())
        return jsonify(predictions=[{k: v.numpy()[i].tolist() for k, v in outputs.items()} for i in range(len(rows))])

    app.run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
