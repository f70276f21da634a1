//! The `holders.v1` gRPC contract: generated messages, client and server, and the encoded
//! descriptor set that server reflection serves so `grpcurl` needs no .proto file.

/// Generated code for package `holders.v1`.
#[allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("holders.v1");
}

/// The encoded `FileDescriptorSet` of every file in `holders.v1`, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("holders_descriptor");
