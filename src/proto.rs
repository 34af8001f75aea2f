//! The generated `dataaccess.v1` types, server and client, and the descriptor set for
//! reflection.
#![allow(clippy::all, missing_docs)]

tonic::include_proto!("dataaccess.v1");

/// Encoded `FileDescriptorSet` of dataaccess.v1 and its imports, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dataaccess_descriptor");
