from inmaterio.devices.hopping.config import HoppingConfig
