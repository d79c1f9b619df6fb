"""`workbench serve`: an HTTP server for one exported model, speaking TF Serving's REST API.

* `model`: the served model: located and opened through the export-format registry, with its labels, name and
  version; classifies a batch of encoded images, each checked and refused on its own.
* `batcher`: the dynamic batcher: requests queue, a worker thread runs them through the model in batches.
* `tfserving`: TF Serving's predict request and response bodies (row and columnar formats) and its status JSON.
* `metrics`: request, error, latency and batch-size counters in Prometheus' text format.
* `app`: the Starlette application tying them together; `workbench.commands.serve` runs it under uvicorn.

Nothing is imported here: `workbench --help` stays instant.
"""
