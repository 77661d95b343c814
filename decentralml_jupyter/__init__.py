"""decentralml-jupyter: DecentralML (federated learning governed on a Substrate chain) from Jupyter.

Heavy dependencies (substrate-interface, TensorFlow) are imported lazily by the submodules that
need them, so importing the package stays cheap.
"""

__version__ = "0.1.0"
