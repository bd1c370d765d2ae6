"""Worked examples of randomized defenses that are not the plugin's own, evaluated with
:func:`lwta_plugin.evaluate`: a small MNIST CNN trained here (:mod:`.mnist_cnn`) and two well-known randomized
defenses on top of it (:mod:`.defenses`): random resize-and-pad (Xie et al. 2018) and Gaussian noise injection
(Random Self-Ensemble, Liu et al. 2018). The factories in :mod:`.defenses` are what
``lwta evaluate --model-factory`` imports.
"""
