"""The NWB layer: the Allen layout (``layout``) and h5py helpers that read it (``read``)."""
