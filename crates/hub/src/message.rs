//! Published data and the messages the hub hands to subscribers.

use std::any::Any;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::position::Position;
use crate::topic::TopicName;

/// Published data: one JSON value in compact form, validated once when it enters the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data(String);

/// Why a body is not acceptable data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataError {
    /// The JSON is invalid; the text says where.
    BadJson(String),
}

impl std::fmt::Display for DataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataError::BadJson(why) => write!(f, "body is not valid JSON: {why}"),
        }
    }
}

impl std::error::Error for DataError {}

impl Data {
    /// Validates JSON text and removes the white space between its tokens, so that the data
    /// keeps its exact numbers and key order but never spans lines (SSE splits on line ends).
    pub fn from_json(json: &[u8]) -> Result<Data, DataError> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_slice(json).map_err(|e| DataError::BadJson(e.to_string()))?;
        Ok(Data(minify(raw.get())))
    }

    /// Data that was validated when it entered a gateway and comes back from a message store
    /// exactly as it was stored.
    pub fn from_stored(json: String) -> Data {
        Data(json)
    }

    /// Data that is a JSON string holding `text`.
    pub fn from_text(text: &str) -> Data {
        Data(serde_json::Value::from(text).to_string())
    }

    /// The compact JSON text.
    pub fn as_json(&self) -> &str {
        &self.0
    }
}

/// Removes white space outside strings from JSON that is already known to be valid. It copies
/// the runs between white space whole: white space, quotes and backslashes are ASCII, so
/// every place it cuts is a character boundary.
fn minify(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut run_start = 0;
    let mut in_string = false;
    let mut escaped = false;
    for (at, byte) in json.bytes().enumerate() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            out.push_str(&json[run_start..at]);
            run_start = at + 1;
        }
    }
    out.push_str(&json[run_start..]);
    out
}

/// How many transport encodings a message can cache; encodings beyond these are made each
/// time they are asked for.
pub const ENCODING_SLOTS: usize = 4;

/// Slots handed out so far.
static SLOTS_TAKEN: AtomicUsize = AtomicUsize::new(0);

/// A place in every message for one encoding of type `T`. Each slot is created once (held in
/// a `static`) and gets an index no other slot has, so two encodings can never share one, and
/// what a slot holds is always a `T`.
#[derive(Debug)]
pub struct EncodingSlot<T> {
    /// `None` when every slot was taken: the encoding is then not cached.
    index: Option<usize>,
    _holds: PhantomData<fn() -> T>,
}

impl<T> EncodingSlot<T> {
    /// A new slot; use it in a `static` (`LazyLock`), once per encoding.
    pub fn new() -> EncodingSlot<T> {
        let index = SLOTS_TAKEN.fetch_add(1, Ordering::Relaxed);
        EncodingSlot {
            index: (index < ENCODING_SLOTS).then_some(index),
            _holds: PhantomData,
        }
    }
}

impl<T> Default for EncodingSlot<T> {
    fn default() -> Self {
        EncodingSlot::new()
    }
}

/// A hub's count of the bytes that its retained messages' encodings take. It can dip below
/// zero for a moment, when a message is released between an encoding's being made and its
/// being counted; it is read as zero then.
#[derive(Debug, Default)]
pub(crate) struct EncodingBytes(AtomicIsize);

impl EncodingBytes {
    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed).max(0) as usize
    }

    fn add(&self, bytes: usize) {
        self.0.fetch_add(bytes as isize, Ordering::Relaxed);
    }

    fn sub(&self, bytes: usize) {
        self.0.fetch_sub(bytes as isize, Ordering::Relaxed);
    }
}

/// The encodings' part of a message's memory, and the hub count they go into while the hub
/// retains the message. Subscribers make encodings before, during and after retention, so one
/// word holds both the bytes made and the `RETAINED` and `RELEASED` flags: an encoding made
/// while only `RETAINED` is set is counted by whoever made it, the ones made before by the
/// retention, and the release takes back exactly what was counted.
#[derive(Debug, Default)]
struct HeldEncodings {
    /// Bytes of the encodings made so far, with the flags in the top bits.
    state: AtomicUsize,
    /// The count of the hub that retains the message, set before `RETAINED`.
    count: OnceLock<Arc<EncodingBytes>>,
}

const RETAINED: usize = 1 << (usize::BITS - 1);
const RELEASED: usize = 1 << (usize::BITS - 2);
const HELD_BYTES: usize = RELEASED - 1;

impl HeldEncodings {
    /// The hub's count, if the message was retained and not yet released in `state`.
    fn counting(&self, state: usize) -> Option<&EncodingBytes> {
        let retained = state & (RETAINED | RELEASED) == RETAINED;
        self.count.get().filter(|_| retained).map(|count| &**count)
    }

    fn add(&self, bytes: usize) {
        let before = self.state.fetch_add(bytes, Ordering::AcqRel);
        if let Some(count) = self.counting(before) {
            count.add(bytes);
        }
    }

    fn retained_in(&self, count: &Arc<EncodingBytes>) {
        if self.count.set(count.clone()).is_err() {
            return;
        }
        let before = self.state.fetch_or(RETAINED, Ordering::AcqRel);
        if before & (RETAINED | RELEASED) == 0 {
            count.add(before & HELD_BYTES);
        }
    }

    fn released(&self) {
        let before = self.state.fetch_or(RELEASED, Ordering::AcqRel);
        if let Some(count) = self.counting(before) {
            count.sub(before & HELD_BYTES);
        }
    }
}

/// One published message, shared by every subscriber that receives it.
#[derive(Debug)]
pub struct Message {
    pub topic: TopicName,
    /// Where the message stands in its topic; its text form is the message `id`.
    pub position: Position,
    /// When the hub accepted it, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The envelope `{"topic":…,"id":…,"data":…,"time":…}`, encoded once at publish time.
    envelope: Bytes,
    /// Where `"id":"` … `"` sits in `envelope`, so the id is available without another copy.
    id_range: (usize, usize),
    /// Where the data sits in `envelope`, for a store to write it without another copy.
    data_range: (usize, usize),
    /// Transport-specific encodings (an SSE event, a WebSocket frame), each made once, by the
    /// first subscriber that needs it, and shared by all the others.
    /// Each is whatever type its transport sends (bytes, a ready-made frame), so that sending
    /// is a reference-count increment.
    encodings: [OnceLock<Box<dyn Any + Send + Sync>>; ENCODING_SLOTS],
    /// What the encodings take, which count against the hub's memory budget while it retains
    /// the message: each is as large as the envelope, so uncounted they would let retained
    /// history take several times `retention_bytes`.
    held: HeldEncodings,
    /// How many inboxes hold the message now, so that the total queued in all inboxes counts
    /// it once.
    pub(crate) queued_in: AtomicUsize,
}

impl Message {
    pub fn new(topic: TopicName, position: Position, time_ms: u64, data: &Data) -> Arc<Message> {
        let mut envelope = String::with_capacity(data.0.len() + topic.as_str().len() + 64);
        // Topic names and ids use only characters that JSON strings need not escape.
        envelope.push_str("{\"topic\":\"");
        envelope.push_str(topic.as_str());
        envelope.push_str("\",\"id\":\"");
        let id_start = envelope.len();
        position.write_to(&mut envelope);
        let id_end = envelope.len();
        envelope.push_str("\",\"data\":");
        let data_start = envelope.len();
        envelope.push_str(&data.0);
        let data_end = envelope.len();
        envelope.push_str(",\"time\":");
        envelope.push_str(itoa::Buffer::new().format(time_ms));
        envelope.push('}');
        Arc::new(Message {
            topic,
            position,
            time_ms,
            envelope: Bytes::from(envelope),
            id_range: (id_start, id_end),
            data_range: (data_start, data_end),
            encodings: Default::default(),
            held: HeldEncodings::default(),
            queued_in: AtomicUsize::new(0),
        })
    }

    /// The message id: its position as text.
    pub fn id(&self) -> &str {
        let (start, end) = self.id_range;
        std::str::from_utf8(&self.envelope[start..end]).unwrap_or_default()
    }

    /// The data, compact JSON as published, as the bytes of its UTF-8 text: a store writes
    /// them as they are, with no need to check them again on every publish.
    pub fn data_bytes(&self) -> &[u8] {
        let (start, end) = self.data_range;
        &self.envelope[start..end]
    }

    /// The JSON envelope, on one line.
    pub fn envelope(&self) -> &Bytes {
        &self.envelope
    }

    /// The encoding cached in `slot`, made by `encode` the first time it is asked for. An
    /// encoding is bytes or text (`T` dereferences to them), so that what it takes is known:
    /// while the hub retains the message, that counts against its memory budget.
    pub fn encoded<T>(&self, slot: &EncodingSlot<T>, encode: impl Fn(&Message) -> T) -> T
    where
        T: Deref<Target: AsRef<[u8]>> + Clone + Send + Sync + 'static,
    {
        let Some(index) = slot.index else {
            return encode(self);
        };
        let mut made = 0;
        let cached = self.encodings[index].get_or_init(|| {
            let encoding = encode(self);
            made = std::mem::size_of::<T>() + AsRef::<[u8]>::as_ref(&*encoding).len();
            Box::new(encoding)
        });
        if made > 0 {
            self.held.add(made);
        }
        match cached.downcast_ref::<T>() {
            Some(encoding) => encoding.clone(),
            // A slot only ever holds its own type.
            None => unreachable!("an encoding slot holds another type"),
        }
    }

    /// Counts the encodings of the message in `count` from now on, those made already
    /// included, until [`Message::released`]: the hub retains it.
    pub(crate) fn retained_in(&self, count: &Arc<EncodingBytes>) {
        self.held.retained_in(count);
    }

    /// Takes the message's encodings back out of its hub's count: the hub no longer retains
    /// it.
    pub(crate) fn released(&self) {
        self.held.released();
    }

    /// What the message counts for in a connection's queue: its envelope, which every
    /// transport's encoding is about the size of.
    pub fn queued_size(&self) -> usize {
        self.envelope.len()
    }

    /// What the message counts for on disk, for a durable store's budget: its envelope, which
    /// holds more than a store writes of it (the store keeps the topic, sequence, time and
    /// data, without the JSON around them).
    pub fn stored_size(&self) -> usize {
        self.envelope.len()
    }

    /// What the message costs in memory, for the retention budget.
    pub fn retained_size(&self) -> usize {
        std::mem::size_of::<Message>() + self.envelope.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::LazyLock;

    use super::*;

    #[test]
    fn json_keeps_numbers_and_order_but_loses_line_ends() {
        let data = Data::from_json(b"{ \"b\" : 1.50,\r\n \"a\": [1, 2],\n\"s\": \"x y\\n\" }")
            .expect("valid");
        assert_eq!(data.as_json(), r#"{"b":1.50,"a":[1,2],"s":"x y\n"}"#);
    }

    #[test]
    fn escaped_quotes_do_not_end_strings() {
        let data = Data::from_json(br#"["a\" b", "c\\", " d "]"#).expect("valid");
        assert_eq!(data.as_json(), r#"["a\" b","c\\"," d "]"#);
    }

    /// JSON values of any shape, with strings of any characters (escaped or not when
    /// printed) and keys in a fixed order.
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn pretty_json_comes_out_as_compact_json(value in json_value()) {
            let pretty = serde_json::to_string_pretty(&value).expect("prints");
            let data = Data::from_json(pretty.as_bytes()).expect("valid");
            proptest::prop_assert_eq!(data.as_json(), serde_json::to_string(&value).expect("prints"));
        }
    }

    #[test]
    fn invalid_json_is_rejected() {
        assert!(Data::from_json(b"{").is_err());
        assert!(Data::from_json(b"").is_err());
        assert!(Data::from_json(b"\"raw\nnewline\"").is_err());
    }

    #[test]
    fn text_becomes_a_json_string() {
        assert_eq!(
            Data::from_text("a\r\nb \"q\"").as_json(),
            r#""a\r\nb \"q\"""#
        );
    }

    #[test]
    fn envelope_is_one_line_with_all_fields() {
        let topic = TopicName::new("chat").expect("valid");
        let position = Position {
            tag: 1,
            epoch: 2,
            seq: 3,
        };
        let message = Message::new(topic, position, 1234, &Data::from_text("hi\n"));
        assert_eq!(
            &message.envelope()[..],
            br#"{"topic":"chat","id":"1-2-3","data":"hi\n","time":1234}"#
        );
        assert_eq!(message.id(), "1-2-3");
        assert_eq!(message.data_bytes(), br#""hi\n""#);
        let value: serde_json::Value = serde_json::from_slice(message.envelope()).expect("json");
        assert_eq!(value["data"], "hi\n");
    }

    /// The slots of this crate's tests, shared: there are only `ENCODING_SLOTS` in all.
    pub(crate) static BYTES: LazyLock<EncodingSlot<Bytes>> = LazyLock::new(EncodingSlot::new);
    static TEXT: LazyLock<EncodingSlot<String>> = LazyLock::new(EncodingSlot::new);

    fn message(seq: u64) -> Arc<Message> {
        let topic = TopicName::new("t").expect("valid");
        let position = Position {
            tag: 1,
            epoch: 1,
            seq,
        };
        Message::new(topic, position, 0, &Data::from_text("x"))
    }

    #[test]
    fn encodings_are_made_once_and_keep_their_type() {
        let message = message(1);
        let calls = std::cell::Cell::new(0);
        for _ in 0..3 {
            let frame = message.encoded(&BYTES, |_| {
                calls.set(calls.get() + 1);
                Bytes::from_static(b"frame")
            });
            assert_eq!(&frame[..], b"frame");
        }
        assert_eq!(calls.get(), 1);
        let text: String = message.encoded(&TEXT, |m| m.id().to_string());
        assert_eq!(text, "1-1-1");
    }

    #[test]
    fn encodings_count_in_the_hub_only_while_it_retains_the_message() {
        let frame_size = std::mem::size_of::<Bytes>() + 100;
        let text_size = std::mem::size_of::<String>() + 5;
        let count = Arc::new(EncodingBytes::default());

        let message = message(1);
        message.encoded(&BYTES, |_| Bytes::from(vec![b'f'; 100]));
        assert_eq!(count.get(), 0);
        message.retained_in(&count);
        assert_eq!(count.get(), frame_size, "made before, counted at retention");
        message.encoded(&TEXT, |m| m.id().to_string());
        assert_eq!(count.get(), frame_size + text_size, "made while retained");
        message.encoded(&TEXT, |_| unreachable!("made once"));
        assert_eq!(count.get(), frame_size + text_size, "counted once");
        message.released();
        assert_eq!(count.get(), 0, "taken back at release");

        let late = self::message(2);
        late.retained_in(&count);
        late.released();
        late.encoded(&BYTES, |_| Bytes::from(vec![b'f'; 100]));
        assert_eq!(count.get(), 0, "made after release, never counted");
        late.released();
        assert_eq!(count.get(), 0, "released once");
    }

    #[test]
    fn encodings_race_with_release_and_leave_the_count_right() {
        let count = Arc::new(EncodingBytes::default());
        for seq in 0..200 {
            let message = message(seq);
            message.retained_in(&count);
            std::thread::scope(|threads| {
                threads.spawn(|| message.encoded(&BYTES, |_| Bytes::from(vec![b'f'; 64])));
                threads.spawn(|| message.encoded(&TEXT, |m| m.id().to_string()));
                threads.spawn(|| message.released());
            });
            assert_eq!(count.get(), 0, "message {seq}");
        }
    }
}
