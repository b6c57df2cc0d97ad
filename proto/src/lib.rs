//! Protobuf schemas of every message cloudcam puts on Kafka, generated with prost.
//!
//! This crate knows the wire format and nothing else: services convert these types into their
//! own domain types at the Kafka boundary.

/// Version 1 of the schemas (`proto/schemas/cloudcam/v1`).
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/cloudcam.v1.rs"));
}

/// The `schema_version` this build writes and the highest it reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Topic of cameras' desired state (compacted, keyed by camera id).
pub const CAMERAS_TOPIC: &str = "cloudcam.cameras.v1";
/// Topic of facts about cameras (keyed by camera id).
pub const EVENTS_TOPIC: &str = "cloudcam.events.v1";

#[cfg(test)]
mod tests {
    use super::v1::*;
    use prost::Message;

    #[test]
    fn unknown_fields_are_tolerated() {
        let spec = CameraSpec {
            schema_version: 1,
            camera_id: "c1".into(),
            ..Default::default()
        };
        let mut buf = spec.encode_to_vec();
        // Append a field number this schema does not know (field 99, varint 7).
        buf.extend_from_slice(&[0x98, 0x06, 0x07]);
        let back = CameraSpec::decode(buf.as_slice()).expect("decodes");
        assert_eq!(back.camera_id, "c1");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(CameraEvent::decode(&[0xff, 0xff, 0xff][..]).is_err());
    }
}
