//! Encoding of the Raft peer protocol's payloads (postcard inside gRPC frames).

use serde::{Serialize, de::DeserializeOwned};
use store_proto::peer::Frame;
use tonic::Status;

/// Encodes a message into a frame.
pub fn encode<T: Serialize>(value: &T) -> Result<Frame, Status> {
    postcard::to_allocvec(value)
        .map(|payload| Frame {
            payload: payload.into(),
        })
        .map_err(|e| Status::internal(format!("encoding a peer message: {e}")))
}

/// Decodes a frame, rejecting malformed input with a clear status rather than panicking.
pub fn decode<T: DeserializeOwned>(frame: &Frame) -> Result<T, Status> {
    postcard::from_bytes(&frame.payload)
        .map_err(|e| Status::invalid_argument(format!("malformed peer message: {e}")))
}
