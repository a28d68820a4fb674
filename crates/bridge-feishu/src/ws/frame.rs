//! The `pbbp2` protobuf frame of the long connection (`feishu-api.md` §9.3).
//!
//! proto2 semantics: fields 1–4 are required and always emitted; like the Go
//! SDK the encoder also emits the empty strings of fields 6, 7 and 9, and
//! field 8 only when there is a payload. The decoder accepts any missing
//! field (it takes the default).

use prost::Message as _;

/// `method` of a control frame (ping / pong).
pub const METHOD_CONTROL: i32 = 0;
/// `method` of a data frame (event / card).
pub const METHOD_DATA: i32 = 1;

/// Header key: frame type (`ping`, `pong`, `event`, `card`).
pub const HEADER_TYPE: &str = "type";
/// Header key: message id shared by all parts of a split message.
pub const HEADER_MESSAGE_ID: &str = "message_id";
/// Header key: number of parts.
pub const HEADER_SUM: &str = "sum";
/// Header key: 0-based part index.
pub const HEADER_SEQ: &str = "seq";
/// Header key: trace id.
pub const HEADER_TRACE_ID: &str = "trace_id";
/// Header key: handler duration in ms, added by the client to acks.
pub const HEADER_BIZ_RT: &str = "biz_rt";

/// `type` of a client ping.
pub const TYPE_PING: &str = "ping";
/// `type` of a server pong.
pub const TYPE_PONG: &str = "pong";
/// `type` of an event data frame.
pub const TYPE_EVENT: &str = "event";
/// `type` of a card callback data frame (not handled).
pub const TYPE_CARD: &str = "card";

/// `pbbp2.Header`: one key/value pair.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Header {
    #[prost(string, required, tag = "1")]
    pub key: String,
    #[prost(string, required, tag = "2")]
    pub value: String,
}

impl Header {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Header {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// `pbbp2.Frame`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Frame {
    /// `SeqID`: echoed in replies.
    #[prost(uint64, required, tag = "1")]
    pub seq_id: u64,
    /// `LogID`: echoed in replies.
    #[prost(uint64, required, tag = "2")]
    pub log_id: u64,
    /// Service id (`service_id` of the endpoint URL in client pings).
    #[prost(int32, required, tag = "3")]
    pub service: i32,
    /// [`METHOD_CONTROL`] or [`METHOD_DATA`].
    #[prost(int32, required, tag = "4")]
    pub method: i32,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<Header>,
    /// Unused by the SDKs; always emitted (empty).
    #[prost(string, required, tag = "6")]
    pub payload_encoding: String,
    /// Unused by the SDKs; always emitted (empty).
    #[prost(string, required, tag = "7")]
    pub payload_type: String,
    /// JSON bytes, when present.
    #[prost(bytes = "vec", optional, tag = "8")]
    pub payload: Option<Vec<u8>>,
    /// `LogIDNew`; always emitted (empty unless set).
    #[prost(string, required, tag = "9")]
    pub log_id_new: String,
}

impl Frame {
    /// A client ping for `service`.
    pub fn ping(service: i32) -> Frame {
        Frame {
            service,
            method: METHOD_CONTROL,
            headers: vec![Header::new(HEADER_TYPE, TYPE_PING)],
            ..Frame::default()
        }
    }

    /// The first value of header `key`.
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| h.value.as_str())
    }

    /// Header `key` as an integer.
    pub fn header_int(&self, key: &str) -> Option<i64> {
        self.header(key).and_then(|v| v.trim().parse().ok())
    }

    /// The `type` header.
    pub fn frame_type(&self) -> Option<&str> {
        self.header(HEADER_TYPE)
    }

    /// Where this frame belongs in a split message: the `message_id` (empty
    /// when absent), `sum` (1 when absent or not a count) and `seq` (0 when
    /// absent or not an index).
    pub fn split_part(&self) -> (&str, usize, usize) {
        let message_id = self.header(HEADER_MESSAGE_ID).unwrap_or("");
        let sum = usize::try_from(self.header_int(HEADER_SUM).unwrap_or(1)).unwrap_or(1);
        let seq = usize::try_from(self.header_int(HEADER_SEQ).unwrap_or(0)).unwrap_or(0);
        (message_id, sum, seq)
    }

    /// The acknowledgement of this data frame: same ids, service, method and
    /// headers plus `biz_rt`, with payload `{"code":200}` or `{"code":500}`.
    pub fn ack(&self, ok: bool, biz_rt_ms: i64) -> Frame {
        let mut ack = self.clone();
        ack.headers
            .push(Header::new(HEADER_BIZ_RT, biz_rt_ms.to_string()));
        ack.payload = Some(if ok {
            br#"{"code":200}"#.to_vec()
        } else {
            br#"{"code":500}"#.to_vec()
        });
        ack
    }

    /// Protobuf bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// Decodes protobuf bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Frame, prost::DecodeError> {
        Frame::decode(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ping_matches_the_reference_encoding() {
        let want =
            "08 00 10 00 18 01 20 00 2a 0c 0a 04 74 79 70 65 12 04 70 69 6e 67 32 00 3a 00 4a 00"
                .replace(' ', "");
        assert_eq!(hex::encode(Frame::ping(1).to_bytes()), want);
    }

    #[test]
    fn decoder_accepts_missing_fields() {
        // only field 4 (method = 1) and one header
        let bytes = hex::decode("20012a0d0a047479706512056576656e74").unwrap();
        let f = Frame::from_bytes(&bytes).unwrap();
        assert_eq!(f.method, METHOD_DATA);
        assert_eq!(f.seq_id, 0);
        assert_eq!(f.frame_type(), Some("event"));
        assert_eq!(f.payload, None);
        assert_eq!(f.log_id_new, "");
        assert_eq!(Frame::from_bytes(&[]).unwrap(), Frame::default());
    }

    #[test]
    fn round_trip_with_payload_and_unknown_fields_skipped() {
        let f = Frame {
            seq_id: 7,
            log_id: u64::MAX,
            service: -3,
            method: METHOD_DATA,
            headers: vec![
                Header::new(HEADER_TYPE, TYPE_EVENT),
                Header::new(HEADER_SUM, "2"),
            ],
            payload: Some(b"{\"a\":1}".to_vec()),
            log_id_new: "n".into(),
            ..Frame::default()
        };
        let mut bytes = f.to_bytes();
        // append unknown field 15 (varint 1)
        bytes.extend_from_slice(&[0x78, 0x01]);
        let back = Frame::from_bytes(&bytes).unwrap();
        assert_eq!(back, f);
        assert_eq!(back.header_int(HEADER_SUM), Some(2));
        assert!(Frame::from_bytes(&[0x0a, 0xff]).is_err());
    }

    #[test]
    fn ack_echoes_ids_and_headers() {
        let f = Frame {
            seq_id: 11,
            log_id: 22,
            service: 3,
            method: METHOD_DATA,
            headers: vec![
                Header::new(HEADER_TYPE, TYPE_EVENT),
                Header::new(HEADER_MESSAGE_ID, "m1"),
            ],
            payload: Some(b"{}".to_vec()),
            ..Frame::default()
        };
        let ack = f.ack(true, 4);
        assert_eq!(
            (ack.seq_id, ack.log_id, ack.service, ack.method),
            (11, 22, 3, 1)
        );
        assert_eq!(ack.headers[..2], f.headers[..]);
        assert_eq!(ack.header(HEADER_BIZ_RT), Some("4"));
        assert_eq!(ack.payload.as_deref(), Some(&br#"{"code":200}"#[..]));
        assert_eq!(
            f.ack(false, 0).payload.as_deref(),
            Some(&br#"{"code":500}"#[..])
        );
    }
}
