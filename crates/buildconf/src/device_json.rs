//! `device-type.json`: the device type in balena's format, written to the boot partition so that
//! balena's tools (`balena os configure`, Etcher, the cloud) recognise the image.

use serde_json::{Value, json};

use crate::DeviceType;

/// The image `yocto.image` names; baleen builds no flasher image yet.
const IMAGE: &str = "balena-image";

/// The image type (`yocto.fstype`) of a raw balenaOS disk image.
const FSTYPE: &str = "balenaos-img";

impl DeviceType {
    /// The `device-type.json` of this device type, in balena's format (`version: 1`).
    ///
    /// `configuration.config` tells balena's tools where `config.json` lives in the image
    /// (partition 1, `/config.json`); `options` and `initialization` are the standard network
    /// questions and "burn to a drive" steps of balena's common device-type definitions.
    pub fn device_type_json(&self) -> Value {
        let link = self.getting_started_link.as_str();
        json!({
            "slug": self.slug,
            "version": 1,
            "aliases": [self.slug],
            "name": self.name,
            "arch": self.arch.balena(),
            "state": self.state.as_str(),
            "instructions": self.instructions,
            "gettingStartedLink": { "windows": link, "osx": link, "linux": link },
            "supportsBlink": false,
            "yocto": {
                "machine": self.machine,
                "image": IMAGE,
                "fstype": FSTYPE,
                "deployArtifact": format!("{IMAGE}-{}.{FSTYPE}", self.machine),
                "compressed": true,
            },
            "configuration": {
                "config": { "partition": { "primary": 1 }, "path": "/config.json" },
            },
            "options": [network_options()],
            "initialization": {
                "options": [{ "message": "Select a drive", "type": "drive", "name": "drive" }],
                "operations": [{ "command": "burn" }],
            },
        })
    }
}

/// The network question group of balena's common device-type definitions.
fn network_options() -> Value {
    json!({
        "isGroup": true,
        "name": "network",
        "message": "Network",
        "options": [
            {
                "message": "Network Connection",
                "name": "network",
                "type": "list",
                "choices": ["ethernet", "wifi"],
            },
            {
                "message": "Wifi SSID",
                "name": "wifiSsid",
                "type": "text",
                "when": { "network": "wifi" },
            },
            {
                "message": "Wifi Passphrase",
                "name": "wifiKey",
                "type": "password",
                "when": { "network": "wifi" },
            },
        ],
    })
}
