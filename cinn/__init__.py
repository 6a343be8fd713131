"""cinn: train the paper's conditional invertible network on training stores, predict posteriors.

Python API (see each module): :func:`cinn.train.train`, :func:`cinn.model.load_model` (the
model directory), :class:`cinn.posterior.Posterior` (sampling, MAP, densities on arrays),
:func:`cinn.inference.run_prediction`, :func:`cinn.evaluate.evaluate`, :func:`cinn.search.search`,
:func:`cinn.bias.fit_bias_table`; configuration in :mod:`cinn.config`. Modules depend downward:
network <- posterior <- model <- inference <- train, predict, evaluate (independent of each
other) <- cli; :mod:`cinn.catalog` writes the ECSV/FITS/CSV tables.
"""
