//! The gRPC wire format: the generated `stance.v1` messages and service stubs, the file
//! descriptor set for server reflection, and conversions to and from the library's types.

pub mod codec;
pub mod convert;
pub mod pem;

/// Generated from `proto/stance/v1/stance.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("stance.v1");
}

/// The encoded file descriptor set of `stance.v1`, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("stance_v1_descriptor");

/// The fully qualified service name, as health checks and reflection know it.
pub const SERVICE_NAME: &str = "stance.v1.Stance";
