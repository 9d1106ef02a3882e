//! Per-message extensions (RFC 6455 §9): the one seam between the connection and what
//! transforms data message payloads, negotiated in the handshake.
//!
//! The connection asks an agreed extension, through [`Extension`], whether and how to encode
//! what it sends and to decode what it receives (the first frame of an encoded message carries
//! RSV1); [`Extensions`] holds the negotiation, from the offer to the agreement. permessage-deflate
//! (RFC 7692, [`crate::deflate`]) is the extension implemented, behind the `deflate` feature:
//! everything the connection knows of it is in this file. Without the feature nothing is ever
//! offered or agreed and [`Extensions`] takes no room.

use alloc::vec::Vec;

use bytes::BytesMut;

use crate::error::Error;
use crate::handshake::HandshakeError;
use crate::handshake::client::{ClientRequest, Response};
use crate::handshake::server::{Accept, Request};
use crate::limits::Config;

/// What the connection asks of the agreed per-message extension.
pub(super) trait Extension {
    /// Whether a message of `len` bytes sent at once is encoded.
    fn encodes(&self, len: usize) -> bool;

    /// Whether a streamed message, whose size is unknown, is encoded.
    fn encodes_streams(&self) -> bool;

    /// Connections whose extensions give equal keys encode any message to the same bytes, so
    /// a broadcast is encoded once per key. `None` when the encoding depends on earlier
    /// messages.
    fn shared_key(&self) -> Option<(u8, u8)>;

    /// Encodes one piece of a message, appending to `out`. `last`: the message ends here.
    fn encode(&mut self, data: &[u8], last: bool, out: &mut Vec<u8>);

    /// Decodes one frame's payload of an encoded message, appending to `out`, which must not
    /// grow beyond `limit` bytes. `last`: the message's final frame. After an error the
    /// message is forgotten (the connection fails with that error).
    fn decode(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), Error>;
}

/// Without the `deflate` feature no extension can be agreed: a type without values.
#[cfg(not(feature = "deflate"))]
#[derive(Debug)]
enum NoExtension {}

#[cfg(not(feature = "deflate"))]
impl Extension for NoExtension {
    fn encodes(&self, _: usize) -> bool {
        match *self {}
    }

    fn encodes_streams(&self) -> bool {
        match *self {}
    }

    fn shared_key(&self) -> Option<(u8, u8)> {
        match *self {}
    }

    fn encode(&mut self, _: &[u8], _: bool, _: &mut Vec<u8>) {
        match *self {}
    }

    fn decode(&mut self, _: &[u8], _: bool, _: &mut BytesMut, _: usize) -> Result<(), Error> {
        match *self {}
    }
}

#[cfg(feature = "deflate")]
impl Extension for crate::deflate::Codec {
    #[inline]
    fn encodes(&self, len: usize) -> bool {
        self.should_compress(len)
    }

    #[inline]
    fn encodes_streams(&self) -> bool {
        self.compresses_streams()
    }

    #[inline]
    fn shared_key(&self) -> Option<(u8, u8)> {
        crate::deflate::Codec::shared_key(self)
    }

    #[inline]
    fn encode(&mut self, data: &[u8], last: bool, out: &mut Vec<u8>) {
        self.compress(data, last, out);
    }

    fn decode(
        &mut self,
        input: &[u8],
        last: bool,
        out: &mut BytesMut,
        limit: usize,
    ) -> Result<(), Error> {
        use crate::deflate::InflateFailure;
        let error = match self.decompress(input, last, out, limit) {
            Ok(()) => return Ok(()),
            Err(InflateFailure::TooLarge) => Error::MessageTooLarge {
                size: out.len() as u64,
                max: limit,
            },
            Err(InflateFailure::Invalid) => Error::InvalidCompressedData,
        };
        self.release();
        Err(error)
    }
}

/// A connection's per-message extension, from the server's answer to the client's offers
/// (kept until `accept`) to the agreed extension. 16 bytes with the `deflate` feature (what
/// the codec and the offer took as two boxes), none without.
#[derive(Debug, Default)]
pub(super) struct Extensions {
    #[cfg(feature = "deflate")]
    slot: Slot,
}

#[cfg(feature = "deflate")]
#[derive(Debug, Default)]
enum Slot {
    #[default]
    None,
    /// Server: the answer to the client's permessage-deflate offers, applied by `accept`.
    Offered(
        alloc::boxed::Box<(
            crate::deflate::DeflateParams,
            crate::handshake::ExtensionOffer,
        )>,
    ),
    Agreed(alloc::boxed::Box<crate::deflate::Codec>),
}

#[cfg(feature = "deflate")]
fn is_deflate(offer: &crate::handshake::ExtensionOffer) -> bool {
    offer
        .name
        .eq_ignore_ascii_case(crate::deflate::PERMESSAGE_DEFLATE)
}

impl Extensions {
    /// The agreed extension, if any, seen only through [`Extension`].
    #[inline]
    pub(super) fn agreed(&mut self) -> Option<&mut impl Extension> {
        #[cfg(feature = "deflate")]
        if let Slot::Agreed(codec) = &mut self.slot {
            return Some(&mut **codec);
        }
        #[cfg(not(feature = "deflate"))]
        return None::<&mut NoExtension>;
        #[cfg(feature = "deflate")]
        None
    }

    #[inline]
    pub(super) fn is_agreed(&self) -> bool {
        #[cfg(feature = "deflate")]
        return matches!(self.slot, Slot::Agreed(_));
        #[cfg(not(feature = "deflate"))]
        false
    }

    /// Whether streamed messages are encoded (see [`Extension::encodes_streams`]).
    pub(super) fn encodes_streams(&self) -> bool {
        #[cfg(feature = "deflate")]
        let agreed = match &self.slot {
            Slot::Agreed(codec) => Some(&**codec),
            _ => None,
        };
        #[cfg(not(feature = "deflate"))]
        let agreed = None::<&NoExtension>;
        agreed.is_some_and(Extension::encodes_streams)
    }

    /// Forgets the offer and the agreement (the connection closed).
    pub(super) fn clear(&mut self) {
        *self = Extensions::default();
    }

    /// Client: adds the configured offers to the upgrade request, unless the application
    /// already offered the extension itself.
    pub(super) fn offer(config: &Config, request: &mut ClientRequest) {
        #[cfg(feature = "deflate")]
        if let Some(deflate) = &config.deflate
            && !request.extensions.iter().any(is_deflate)
        {
            request.extensions.extend(deflate.offers());
        }
        let _ = (config, request);
    }

    /// Server: answers the offers of a valid upgrade request; `accept` applies the answer.
    pub(super) fn on_request(&mut self, config: &Config, request: &Request) {
        #[cfg(feature = "deflate")]
        if let (Some(policy), Ok(offers)) = (&config.deflate, request.extensions()) {
            self.slot = match crate::deflate::negotiate(&offers, policy) {
                Some(offer) => Slot::Offered(alloc::boxed::Box::new(offer)),
                None => Slot::None,
            };
        }
        let _ = (config, request);
    }

    /// Server: adds the answer to the accepted extensions and agrees on the extension, unless
    /// the application chose its own answer.
    pub(super) fn on_accept(&mut self, config: &Config, accept: &mut Accept) {
        #[cfg(feature = "deflate")]
        {
            let app_chose = accept.extensions.iter().any(is_deflate);
            let offer = match core::mem::take(&mut self.slot) {
                Slot::Offered(offer) => Some(offer),
                slot => {
                    self.slot = slot;
                    None
                }
            };
            if let (false, Some(offer), Some(policy)) = (app_chose, offer, &config.deflate) {
                let (params, response) = *offer;
                accept.extensions.push(response);
                self.slot = Slot::Agreed(alloc::boxed::Box::new(crate::deflate::Codec::new(
                    params, true, policy,
                )));
            }
        }
        let _ = (config, accept);
    }

    /// Client: agrees on what the server's 101 response accepted.
    pub(super) fn on_response(
        &mut self,
        config: &Config,
        response: &Response,
    ) -> Result<(), HandshakeError> {
        #[cfg(feature = "deflate")]
        {
            let mut accepted = response.extensions.iter().filter(|e| is_deflate(e));
            let Some(ext) = accepted.next() else {
                return Ok(());
            };
            if accepted.next().is_some() {
                return Err(HandshakeError::InvalidHeader {
                    name: "Sec-WebSocket-Extensions",
                    reason: "permessage-deflate accepted twice",
                });
            }
            // We only offer what the config says; Response::parse refused unoffered extensions.
            let policy = config.deflate.clone().unwrap_or_default();
            let params = crate::deflate::accept_response(ext, &policy)?;
            self.slot = Slot::Agreed(alloc::boxed::Box::new(crate::deflate::Codec::new(
                params, false, &policy,
            )));
        }
        let _ = (config, response);
        Ok(())
    }
}
