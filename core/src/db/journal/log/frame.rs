//! The log's frames: how a [`Record`] is written (length, CRC-32, JSON
//! payload) and how a file of frames is read back, stopping at the first
//! frame that is short, fails its checksum or does not decode.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{failed, Record, Write};
use crate::db::{Direction, Document, IndexSpec, StoreResult};

/// Frame header: payload length and checksum.
const HEADER: usize = 8;

/// A frame's payload as written: borrows the record, so encoding a commit
/// copies nothing but the JSON text.
#[derive(Serialize)]
pub(super) enum Frame<'a> {
    #[serde(rename = "w")]
    Writes(WritesOut<'a>),
    #[serde(rename = "ix")]
    CreateIndex(IndexJson<&'a str>),
    #[serde(rename = "dx")]
    DropIndex(&'a str, &'a str),
    #[serde(rename = "snapshot")]
    Snapshot { covers: u64 },
}

/// A frame's payload as read.
#[derive(Deserialize)]
pub(super) enum FrameIn {
    #[serde(rename = "w")]
    Writes(Vec<(String, String, Option<Document>)>),
    #[serde(rename = "ix")]
    CreateIndex(IndexJson<String>),
    #[serde(rename = "dx")]
    DropIndex(String, String),
    #[serde(rename = "snapshot")]
    Snapshot { covers: u64 },
}

/// `[[collection, id, doc | null], ...]`, without collecting a Vec first.
pub(super) struct WritesOut<'a>(&'a [Write]);

impl Serialize for WritesOut<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .iter()
                .map(|w| (&w.collection, &w.id, w.doc.as_deref())),
        )
    }
}

/// An [`IndexSpec`] in the log (it has no serde form of its own).
#[derive(Serialize, Deserialize)]
pub(super) struct IndexJson<S> {
    collection: S,
    name: S,
    fields: Vec<(S, DirectionJson)>,
    unique: bool,
}

#[derive(Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum DirectionJson {
    Asc,
    Desc,
}

impl<'a> From<&'a Record> for Frame<'a> {
    fn from(record: &'a Record) -> Self {
        match record {
            Record::Writes(writes) => Frame::Writes(WritesOut(writes)),
            Record::CreateIndex(spec) => Frame::CreateIndex(IndexJson {
                collection: &spec.collection,
                name: &spec.name,
                fields: spec
                    .fields
                    .iter()
                    .map(|(field, direction)| {
                        let direction = match direction {
                            Direction::Asc => DirectionJson::Asc,
                            Direction::Desc => DirectionJson::Desc,
                        };
                        (field.as_str(), direction)
                    })
                    .collect(),
                unique: spec.unique,
            }),
            Record::DropIndex { collection, name } => Frame::DropIndex(collection, name),
        }
    }
}

impl FrameIn {
    /// The record, or `None` for a snapshot header.
    pub(super) fn into_record(self) -> Option<Record> {
        Some(match self {
            FrameIn::Writes(writes) => Record::Writes(
                writes
                    .into_iter()
                    .map(|(collection, id, doc)| Write {
                        collection,
                        id,
                        doc: doc.map(Arc::new),
                    })
                    .collect(),
            ),
            FrameIn::CreateIndex(spec) => Record::CreateIndex(IndexSpec {
                collection: spec.collection,
                name: spec.name,
                fields: spec
                    .fields
                    .into_iter()
                    .map(|(field, direction)| match direction {
                        DirectionJson::Asc => (field, Direction::Asc),
                        DirectionJson::Desc => (field, Direction::Desc),
                    })
                    .collect(),
                unique: spec.unique,
            }),
            FrameIn::DropIndex(collection, name) => Record::DropIndex { collection, name },
            FrameIn::Snapshot { .. } => return None,
        })
    }
}

/// Replaces `buf` with `frame` framed: length, checksum, JSON payload.
pub(super) fn encode_frame(buf: &mut Vec<u8>, frame: &Frame<'_>) -> io::Result<()> {
    buf.clear();
    buf.extend_from_slice(&[0; HEADER]);
    serde_json::to_writer(&mut *buf, frame)?;
    let payload = &buf[HEADER..];
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::other("a journal record is larger than 4 GiB"))?;
    let crc = crc32fast::hash(payload);
    buf[..4].copy_from_slice(&len.to_le_bytes());
    buf[4..HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// How far a file's frames could be read.
pub(super) struct Scan {
    /// Bytes up to the end of the last good frame.
    pub(super) good: u64,
    /// Why reading stopped before the end of the file, if it did.
    pub(super) problem: Option<String>,
}

/// Reads `file`'s frames in order, handing each to `each`, until the end of
/// the file or the first frame that is short, fails its checksum, does not
/// decode, or that `each` refuses.
pub(super) fn scan(
    path: &Path,
    file: &File,
    mut each: impl FnMut(FrameIn) -> Result<(), String>,
) -> StoreResult<Scan> {
    let len = file
        .metadata()
        .map_err(|err| failed("read", path, err))?
        .len();
    let mut reader = BufReader::with_capacity(1024 * 1024, file);
    let mut payload = Vec::new();
    let mut good = 0;
    let stop = |good, why: &str| {
        Ok(Scan {
            good,
            problem: Some(why.to_owned()),
        })
    };
    while good < len {
        if len - good < HEADER as u64 {
            return stop(good, "a frame header is cut short");
        }
        let mut header = [0; HEADER];
        reader
            .read_exact(&mut header)
            .map_err(|err| failed("read", path, err))?;
        let size = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if u64::from(size) > len - good - HEADER as u64 {
            return stop(good, "a frame is cut short");
        }
        payload.resize(size as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(|err| failed("read", path, err))?;
        if crc32fast::hash(&payload) != crc {
            return stop(good, "a frame fails its checksum");
        }
        let frame = match serde_json::from_slice(&payload) {
            Ok(frame) => frame,
            Err(err) => return stop(good, &format!("a frame does not decode ({err})")),
        };
        if let Err(why) = each(frame) {
            return stop(good, &why);
        }
        good += (HEADER + payload.len()) as u64;
    }
    Ok(Scan {
        good,
        problem: None,
    })
}
