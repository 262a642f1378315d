//! The protobuf codec of the generated stubs: prost's, except that a message that does not
//! decode (bad wire data, a string field that is not UTF-8) is the sender's bad input,
//! INVALID_ARGUMENT with prost's reason, rather than tonic's INTERNAL.

use std::marker::PhantomData;

use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

#[derive(Debug, Clone)]
pub struct StanceCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StanceCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for StanceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StanceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::default().encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StanceDecoder(ProstCodec::<T, U>::default().decoder())
    }
}

#[derive(Debug, Clone)]
pub struct StanceDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for StanceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0
            .decode(buf)
            .map_err(|s| Status::invalid_argument(format!("not a valid stance.v1 message: {}", s.message())))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
