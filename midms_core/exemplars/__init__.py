"""Several exemplars by region: ``union`` (G exemplars matched as one softmax), ``regions``
(which condition regions may draw from which exemplar, label-aware matching) and
``label_colours`` (label maps whose colours drifted, snapped to one palette).
"""
