"""The real-host harness: everything needed to run this pack inside a REAL ComfyUI.

Imported by ``tests/comfy`` (the host test suite), ``benchmarks`` and ``scripts``; it is NOT
part of the shipped node pack: the pack's entry point (``__init__.py``), ``nodes/``,
``host_adapters/`` and ``midms_core/`` never import it.

* :mod:`harness.host`: locate a host (:func:`~harness.host.find_host`), run it as a server
  (:class:`~harness.host.ComfyServer`) or import it into this process
  (:class:`~harness.host.InProcessHost`);
* :mod:`harness.helper_nodes`: test-only nodes (zero conditioning, tensor saver, ...) that the
  host loads as a custom node pack of their own; copied into a work dir, never imported here;
* :mod:`harness.pack`: the pack's node classes and modules as a host loaded them;
* :mod:`harness.tiny_models`: tiny seeded checkpoint FILES a host detects (SD1.5, SDXL, SD3,
  ControlNet, VAE), pure torch;
* :mod:`harness.inprocess_models`: tiny seeded models built from the host's own classes;
* :mod:`harness.sdxl_scale`: SDXL U-Nets at real widths and the pack's node inputs, for the
  SDXL-scale benchmark;
* :mod:`harness.workflow_convert`: UI-format workflows to API-format prompts, as the web
  frontend converts them.
"""
