//! The protobuf codec of dataaccess.v1 (build.rs names it to tonic-prost-build): tonic-prost's,
//! except that a request the server cannot decode (malformed bytes, invalid UTF-8 in a string,
//! values nested past prost's recursion limit) is the client's fault, answered
//! `INVALID_ARGUMENT` with an ErrorInfo like every other malformed request. tonic-prost answers
//! `INTERNAL` with no details, which tells the client nothing it can act on.

use std::marker::PhantomData;

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

use crate::error::Error;
use crate::proto;

/// Which side a message comes from. A request that fails to decode is a bad request; a
/// response that fails to decode (in the generated client) stays tonic's INTERNAL, as the
/// server's fault.
pub trait Inbound {
    /// Whether the message is sent by a client.
    const FROM_CLIENT: bool;
}

macro_rules! inbound {
    ($from_client:expr => $($t:ty),+ $(,)?) => {
        $(impl Inbound for $t {
            const FROM_CLIENT: bool = $from_client;
        })+
    };
}

inbound!(true => proto::QueryRequest, proto::TransactionRequest, proto::PoolStatusRequest,
    proto::StatementReportRequest);
inbound!(false => proto::QueryResponse, proto::TransactionResponse, proto::PoolStatusResponse,
    proto::StatementReportResponse);

/// The request field a decoding failure is reported against: the message as a whole, as
/// for a message over the size limit.
const FIELD: &str = "request";

/// Most characters of prost's description kept in the answer: past the recursion limit it
/// lists every enclosing field, a hundred of them.
const DESCRIPTION_CHARS: usize = 300;

/// tonic-prost's codec with [`Inbound`]-aware decoding errors.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        ProtoCodec(PhantomData)
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Inbound + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(ProstDecoder::new(BufferSettings::default()))
    }
}

/// Decodes `U`, answering a request that cannot be decoded with `INVALID_ARGUMENT`.
#[derive(Debug)]
pub struct ProtoDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default + Inbound> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        if !U::FROM_CLIENT {
            return self.0.decode(buf);
        }
        U::decode(buf)
            .map(Some)
            .map_err(|e| Status::from(Error::invalid(FIELD, describe(&e))))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// Why a request could not be decoded, in words a client author can act on.
fn describe(e: &prost::DecodeError) -> String {
    let text = e.to_string();
    if text.contains("recursion limit reached") {
        return "is not a valid dataaccess.v1 message: values are nested too deeply \
                (an array_value may nest at most 6 levels)"
            .to_owned();
    }
    let mut text: String = text.chars().take(DESCRIPTION_CHARS).collect();
    if text.len() < e.to_string().len() {
        text.push('…');
    }
    format!("is not a valid dataaccess.v1 message: {text}")
}

/// The description of a request the codec could not decode, when `status` is that refusal:
/// a stream that reads it (Transaction) ends with the same error.
pub(crate) fn undecodable(status: &Status) -> Option<String> {
    use tonic_types::StatusExt;
    if status.code() != tonic::Code::InvalidArgument {
        return None;
    }
    let details = status.get_error_details();
    let violation = details.bad_request()?.field_violations.first()?;
    (violation.field == FIELD).then(|| violation.description.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn deep_nesting_is_described_briefly() {
        // 60 nested arrays: 120 message levels, past prost's limit of 100.
        let mut value = crate::proto::Value {
            kind: Some(crate::proto::value::Kind::NullValue(0)),
        };
        for _ in 0..60 {
            value = crate::proto::Value {
                kind: Some(crate::proto::value::Kind::ArrayValue(
                    crate::proto::ArrayValue {
                        values: vec![value],
                        ..Default::default()
                    },
                )),
            };
        }
        let bytes = crate::proto::QueryRequest {
            params: vec![value],
            ..Default::default()
        }
        .encode_to_vec();
        let e = crate::proto::QueryRequest::decode(bytes.as_slice()).expect_err("too deep");
        let said = describe(&e);
        assert!(said.contains("nested too deeply"), "{said}");
        assert!(said.len() < DESCRIPTION_CHARS, "{said}");
    }

    #[test]
    fn the_refusal_is_recognised_by_its_field() {
        let e = crate::proto::QueryRequest::decode(&[0x0a, 0x02, 0xff, 0xfe][..])
            .expect_err("invalid UTF-8");
        let status = Status::from(Error::invalid(FIELD, describe(&e)));
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let said = undecodable(&status).expect("recognised");
        assert!(said.contains("UTF-8"), "{said}");
        assert_eq!(undecodable(&Status::from(Error::invalid("sql", "x"))), None);
        assert_eq!(undecodable(&Status::internal("x")), None);
    }
}
