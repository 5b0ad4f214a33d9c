//! A table of malformed frames, each mapped to the error variant and the
//! response code the server pipeline ([`crate::serve`]) must produce.

use actormq_protocol::request::{GetMaxOffsetRequest, Request, SendBatchMessageRequest};
use actormq_protocol::{Error, Message, RequestCode, ResponseCode};
use bytes::{BufMut, BytesMut};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::{TEST_MAX_FRAME, serve};

/// A MessagePack value to build headers and fields by hand.
#[derive(Clone)]
enum V {
    U(u64),
    I(i64),
    S(&'static str),
    Raw(&'static [u8]),
    Nil,
    Arr(Vec<V>),
    Map(Vec<(&'static str, V)>),
}

impl Serialize for V {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            V::U(n) => s.serialize_u64(*n),
            V::I(n) => s.serialize_i64(*n),
            V::S(x) => s.serialize_str(x),
            V::Raw(_) => unreachable!("raw strings are spliced by `mp`"),
            V::Nil => s.serialize_unit(),
            V::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            V::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// MessagePack bytes of `v`; `V::Raw(b)` becomes a str value holding `b`
/// verbatim (to smuggle in invalid UTF-8).
fn mp(v: &V) -> Vec<u8> {
    match v {
        V::Raw(b) => {
            let mut out = vec![0xa0 | b.len() as u8];
            out.extend_from_slice(b);
            out
        }
        V::Map(entries) if entries.iter().any(|(_, v)| matches!(v, V::Raw(_))) => {
            let mut out = vec![0x80 | entries.len() as u8];
            for (k, v) in entries {
                out.extend(mp(&V::S(k)));
                out.extend(mp(v));
            }
            out
        }
        other => rmp_serde::to_vec(other).unwrap(),
    }
}

fn header(code: u32, extra: Vec<(&'static str, V)>) -> V {
    let mut e = vec![
        ("code", V::U(code.into())),
        ("id", V::U(7)),
        ("ver", V::U(0x0001_0000)),
    ];
    e.extend(extra);
    V::Map(e)
}

/// A well-formed frame around `header` bytes, `fields` bytes and `body`.
fn frame(header: &[u8], fields: &[u8], body: &[u8]) -> Vec<u8> {
    let h = header.len() + fields.len();
    let mut out = Vec::new();
    out.extend(((4 + h + body.len()) as u32).to_be_bytes());
    out.extend((h as u32).to_be_bytes());
    out.extend(header);
    out.extend(fields);
    out.extend(body);
    out
}

/// Raw length fields followed by `rest`.
fn raw(frame_len: u32, header_len: u32, rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(frame_len.to_be_bytes());
    out.extend(header_len.to_be_bytes());
    out.extend(rest);
    out
}

fn req(code: RequestCode, fields: V, body: &[u8]) -> Vec<u8> {
    frame(&mp(&header(code.as_u32(), vec![])), &mp(&fields), body)
}

fn max_offset(fields: Vec<(&'static str, V)>) -> Vec<u8> {
    req(GetMaxOffsetRequest::CODE, V::Map(fields), b"")
}

fn send(extra: Vec<(&'static str, V)>, body: &[u8]) -> Vec<u8> {
    let mut f = vec![
        ("producer_group", V::S("g")),
        ("topic", V::S("orders")),
        ("queue_id", V::U(0)),
        ("born_timestamp_ms", V::U(1)),
    ];
    for (k, v) in extra {
        f.retain(|(old, _)| *old != k);
        f.push((k, v));
    }
    req(RequestCode::SendMessage, V::Map(f), body)
}

/// One batch entry: lengths computed from the meta and body given.
fn entry(meta: &[u8], body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_u32((4 + meta.len() + body.len()) as u32);
    b.put_u32(meta.len() as u32);
    b.put_slice(meta);
    b.put_slice(body);
    b.to_vec()
}

fn batch(body: &[u8]) -> Vec<u8> {
    let fields = V::Map(vec![
        ("producer_group", V::S("g")),
        ("topic", V::S("orders")),
        ("queue_id", V::U(0)),
        ("born_timestamp_ms", V::U(1)),
    ]);
    req(SendBatchMessageRequest::CODE, fields, body)
}

fn good_entry() -> Vec<u8> {
    entry(&mp(&V::Map(vec![("topic", V::S("orders"))])), b"x")
}

type Check = fn(&Error) -> bool;

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Check,
    code: ResponseCode,
}

fn cases() -> Vec<Case> {
    use ResponseCode as R;
    let ok_header = mp(&header(GetMaxOffsetRequest::CODE.as_u32(), vec![]));
    let ok_fields = mp(&V::Map(vec![("topic", V::S("t")), ("queue_id", V::U(1))]));
    let deep: Vec<u8> = std::iter::repeat_n(0x91, 40).chain([0x01]).collect();
    let deep: &'static [u8] = deep.leak();
    let mut deep_meta = mp(&V::Map(vec![("topic", V::S("orders")), ("future", V::Nil)]));
    deep_meta.pop(); // replace the nil of "future" by 40 nested arrays
    deep_meta.extend_from_slice(deep);
    let c = |name, bytes, expect: Check, code| Case {
        name,
        bytes,
        expect,
        code,
    };
    vec![
        c(
            "frame length 0",
            raw(0, 0, b""),
            |e| matches!(e, Error::FrameTooShort { frame_len: 0 }),
            R::MalformedFrame,
        ),
        c(
            "frame length 3",
            raw(3, 0, b""),
            |e| matches!(e, Error::FrameTooShort { frame_len: 3 }),
            R::MalformedFrame,
        ),
        c(
            "frame length over cap",
            raw(TEST_MAX_FRAME + 1, 0, b""),
            |e| matches!(e, Error::FrameTooLarge { .. }),
            R::MalformedFrame,
        ),
        c(
            "frame length u32::MAX",
            raw(u32::MAX, 0, b""),
            |e| matches!(e, Error::FrameTooLarge { .. }),
            R::MalformedFrame,
        ),
        c(
            "header length past frame",
            raw(5, 2, b"\x80"),
            |e| {
                matches!(
                    e,
                    Error::HeaderTooLong {
                        header_len: 2,
                        frame_len: 5
                    }
                )
            },
            R::MalformedFrame,
        ),
        c(
            "header length u32::MAX",
            raw(4, u32::MAX, b""),
            |e| matches!(e, Error::HeaderTooLong { .. }),
            R::MalformedFrame,
        ),
        c(
            "empty header",
            raw(4, 0, b""),
            |e| matches!(e, Error::BadMsgPack(_)),
            R::InvalidParameter,
        ),
        c(
            "header is an array",
            frame(&mp(&V::Arr(vec![V::U(10), V::U(1)])), b"", b""),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "header is a string",
            frame(&mp(&V::S("hello")), b"", b""),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "header reserved marker 0xc1",
            frame(b"\xc1", b"", b""),
            |e| matches!(e, Error::BadMsgPack(_)),
            R::InvalidParameter,
        ),
        c(
            "header map truncated",
            frame(b"\x83\xa4code", b"", b""),
            |e| matches!(e, Error::BadMsgPack(_)),
            R::InvalidParameter,
        ),
        c(
            "header key not a string",
            frame(b"\x81\x01\x02", b"", b""),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "header without code",
            frame(
                &mp(&V::Map(vec![("id", V::U(1)), ("ver", V::U(0x10000))])),
                b"",
                b"",
            ),
            |e| *e == Error::MissingField("code".into()),
            R::InvalidParameter,
        ),
        c(
            "header without id",
            frame(
                &mp(&V::Map(vec![("code", V::U(30)), ("ver", V::U(0x10000))])),
                b"",
                b"",
            ),
            |e| *e == Error::MissingField("id".into()),
            R::InvalidParameter,
        ),
        c(
            "header without ver",
            frame(
                &mp(&V::Map(vec![("code", V::U(30)), ("id", V::U(1))])),
                b"",
                b"",
            ),
            |e| *e == Error::MissingField("ver".into()),
            R::InvalidParameter,
        ),
        c(
            "code is a string",
            frame(
                &mp(&V::Map(vec![
                    ("code", V::S("x")),
                    ("id", V::U(1)),
                    ("ver", V::U(0x10000)),
                ])),
                b"",
                b"",
            ),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "code over u32",
            frame(&mp(&header(0, vec![("code", V::U(1 << 40))])), b"", b""),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "negative request id",
            frame(
                &mp(&V::Map(vec![
                    ("code", V::U(30)),
                    ("id", V::I(-1)),
                    ("ver", V::U(0x10000)),
                ])),
                b"",
                b"",
            ),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "flags is a map",
            frame(&mp(&header(30, vec![("flags", V::Map(vec![]))])), b"", b""),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "remark bad UTF-8",
            frame(
                &mp(&header(30, vec![("remark", V::Raw(b"\xff\xfe"))])),
                b"",
                b"",
            ),
            |e| *e == Error::InvalidUtf8,
            R::InvalidParameter,
        ),
        c(
            "major version 2",
            frame(
                &mp(&header(30, vec![("ver", V::U(0x0002_0000))])),
                &ok_fields,
                b"",
            ),
            |e| {
                matches!(
                    e,
                    Error::UnsupportedVersion {
                        major: 2,
                        request_id: 7
                    }
                )
            },
            R::VersionNotSupported,
        ),
        c(
            "major version 0",
            frame(&mp(&header(30, vec![("ver", V::U(5))])), &ok_fields, b""),
            |e| matches!(e, Error::UnsupportedVersion { major: 0, .. }),
            R::VersionNotSupported,
        ),
        c(
            "unknown request code",
            frame(&mp(&header(9999, vec![])), b"", b""),
            |e| *e == Error::UnknownRequestCode(9999),
            R::RequestCodeNotSupported,
        ),
        c(
            "unknown response code",
            frame(&mp(&header(9999, vec![("flags", V::U(1))])), b"", b""),
            |e| *e == Error::UnknownResponseCode(9999),
            R::SystemError,
        ),
        c(
            "fields without topic",
            max_offset(vec![("queue_id", V::U(1))]),
            |e| *e == Error::MissingField("topic".into()),
            R::InvalidParameter,
        ),
        c(
            "fields queue_id is a string",
            max_offset(vec![("topic", V::S("t")), ("queue_id", V::S("1"))]),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "fields topic bad UTF-8",
            max_offset(vec![
                ("topic", V::Raw(b"or\xffders")),
                ("queue_id", V::U(1)),
            ]),
            |e| *e == Error::InvalidUtf8,
            R::InvalidParameter,
        ),
        c(
            "fields queue_id negative",
            max_offset(vec![("topic", V::S("t")), ("queue_id", V::I(-3))]),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "fields are nil",
            frame(&ok_header, b"\xc0", b""),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "fields trailing bytes",
            frame(&ok_header, &[ok_fields.as_slice(), b"\x01"].concat(), b""),
            |e| matches!(e, Error::BadMsgPack(_)),
            R::InvalidParameter,
        ),
        c(
            "fields truncated",
            frame(&ok_header, &ok_fields[..ok_fields.len() - 1], b""),
            |e| matches!(e, Error::BadMsgPack(_)),
            R::InvalidParameter,
        ),
        c(
            "send: topic with a space",
            send(vec![("topic", V::S("my topic"))], b"x"),
            |e| matches!(e, Error::InvalidTopic { .. }),
            R::InvalidParameter,
        ),
        c(
            "send: empty topic",
            send(vec![("topic", V::S(""))], b"x"),
            |e| matches!(e, Error::InvalidTopic { .. }),
            R::InvalidParameter,
        ),
        c(
            "send: topic 128 chars",
            send(
                vec![("topic", V::S(Box::leak("x".repeat(128).into_boxed_str())))],
                b"x",
            ),
            |e| matches!(e, Error::InvalidTopic { .. }),
            R::InvalidParameter,
        ),
        c(
            "send: body over max size",
            send(vec![], &[0u8; 65]),
            |e| matches!(e, Error::MessageTooLarge { size: 65, max: 64 }),
            R::MessageIllegal,
        ),
        c(
            "send: two delays",
            send(
                vec![("delay_level", V::U(2)), ("deliver_at_ms", V::U(9))],
                b"x",
            ),
            |e| matches!(e, Error::InvalidMessage(_)),
            R::MessageIllegal,
        ),
        c(
            "send: delay level 300",
            send(vec![("delay_level", V::U(300))], b"x"),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "batch: truncated entry length",
            batch(b"\x00\x00"),
            |e| matches!(e, Error::BadBatchEntry { index: 0, .. }),
            R::InvalidParameter,
        ),
        c(
            "batch: entry length < 4",
            batch(&raw(3, 0, b"")),
            |e| matches!(e, Error::BadBatchEntry { index: 0, .. }),
            R::InvalidParameter,
        ),
        c(
            "batch: entry past the end",
            batch(&[good_entry(), raw(100, 1, b"\x80")].concat()),
            |e| matches!(e, Error::BadBatchEntry { index: 1, .. }),
            R::InvalidParameter,
        ),
        c(
            "batch: meta length past entry",
            batch(&raw(5, 2, b"\x80")),
            |e| matches!(e, Error::BadBatchEntry { index: 0, .. }),
            R::InvalidParameter,
        ),
        c(
            "batch: meta without topic",
            batch(&entry(&mp(&V::Map(vec![("tags", V::S("a"))])), b"x")),
            |e| *e == Error::MissingField("topic".into()),
            R::InvalidParameter,
        ),
        c(
            "batch: topic bad UTF-8",
            batch(&entry(
                &mp(&V::Map(vec![("topic", V::Raw(b"\xc3\x28"))])),
                b"x",
            )),
            |e| *e == Error::InvalidUtf8,
            R::InvalidParameter,
        ),
        c(
            "batch: meta is an array",
            batch(&entry(&mp(&V::Arr(vec![V::S("orders")])), b"x")),
            |e| matches!(e, Error::WrongType(_)),
            R::InvalidParameter,
        ),
        c(
            "batch: meta nested too deep",
            batch(&entry(&deep_meta, b"x")),
            |e| matches!(e, Error::BadMsgPack(_)),
            R::InvalidParameter,
        ),
        c(
            "batch: meta trailing bytes",
            batch(&entry(
                &[mp(&V::Map(vec![("topic", V::S("orders"))])), vec![0xc0]].concat(),
                b"x",
            )),
            |e| matches!(e, Error::BadMsgPack(_)),
            R::InvalidParameter,
        ),
        c(
            "batch: two topics",
            batch(
                &[
                    good_entry(),
                    entry(&mp(&V::Map(vec![("topic", V::S("other"))])), b"x"),
                ]
                .concat(),
            ),
            |e| matches!(e, Error::InvalidMessage(_)),
            R::MessageIllegal,
        ),
        c(
            "batch: delayed message",
            batch(
                &[
                    good_entry(),
                    entry(
                        &mp(&V::Map(vec![
                            ("topic", V::S("orders")),
                            ("delay_level", V::U(3)),
                        ])),
                        b"x",
                    ),
                ]
                .concat(),
            ),
            |e| matches!(e, Error::InvalidMessage(_)),
            R::MessageIllegal,
        ),
        c(
            "batch: empty",
            batch(b""),
            |e| matches!(e, Error::InvalidMessage(_)),
            R::MessageIllegal,
        ),
        c(
            "batch: total over max size",
            batch(
                &[
                    entry(&mp(&V::Map(vec![("topic", V::S("orders"))])), &[0; 40]),
                    entry(&mp(&V::Map(vec![("topic", V::S("orders"))])), &[0; 40]),
                ]
                .concat(),
            ),
            |e| matches!(e, Error::MessageTooLarge { size: 80, .. }),
            R::MessageIllegal,
        ),
        c(
            "send back: bad message id",
            req(
                RequestCode::ConsumerSendMsgBack,
                V::Map(vec![
                    ("consumer_group", V::S("g")),
                    ("commit_log_offset", V::U(1)),
                    ("origin_msg_id", V::S("XYZ")),
                    ("origin_topic", V::S("t")),
                    ("max_reconsume_times", V::U(16)),
                ]),
                b"",
            ),
            |e| matches!(e, Error::BadMessageId { .. }),
            R::InvalidParameter,
        ),
        c(
            "check tx: stored entry missing store fields",
            req(
                RequestCode::CheckTransactionState,
                V::Map(vec![
                    ("producer_group", V::S("g")),
                    ("tran_state_table_offset", V::U(1)),
                    ("commit_log_offset", V::U(1)),
                    ("msg_id", V::S("m")),
                ]),
                &good_entry(),
            ),
            |e| *e == Error::MissingField("queue_id".into()),
            R::InvalidParameter,
        ),
    ]
}

#[test]
fn malformed_frames_map_to_their_errors() {
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in &cases {
        match serve(&case.bytes) {
            Err(e) if (case.expect)(&e) && e.response_code() == case.code => {}
            other => failures.push(format!("{}: got {other:?}", case.name)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The control: the builders above make valid frames when nothing is bent,
/// so the table's errors come from the bent part alone.
#[test]
fn unbent_builders_are_accepted() {
    let ok_fields = vec![("topic", V::S("t")), ("queue_id", V::U(1))];
    assert!(serve(&max_offset(ok_fields)).unwrap().is_some());
    assert!(serve(&send(vec![], b"x")).unwrap().is_some());
    assert!(
        serve(&batch(&[good_entry(), good_entry()].concat()))
            .unwrap()
            .is_some()
    );
    let reply = frame(&mp(&header(0, vec![("flags", V::U(1))])), b"", b"");
    assert!(serve(&reply).unwrap().unwrap().is_response());
    let msg = Message::new("orders", &b"x"[..]);
    let body = actormq_protocol::batch::messages_to_bytes(&[msg]);
    assert_eq!(&body[..], &good_entry()[..]);
}
