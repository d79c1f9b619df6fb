"""Everything about trained artefacts: exporting a run, opening model files safely, and predicting with them.

* `imaging`: encoded image bytes → model input, the one decode/resize path of serving and prediction.
* `model_files`: locate a model by its content and open it safely (`locate_model`, `open_run`, `ModelFileError`).
* `model_card`: the card written beside every export.
* `formats/`: one module per export-format family; `registry` lists the formats (`get_format`, `format_names`).
* `export`: `export(run_dir, format)` writes a registered format with its labels and model card.
* `predict`: `predict(model_path, images)` opens any exported model through its format's runtime.

Nothing is imported here, so `import workbench.serving.registry` stays light (the CLI reads its choices).
"""
