//! What whaled and a runner process say to each other over their Unix socket.
//!
//! Each message is one frame: its length as a little-endian `u32`, then that many bytes of
//! JSON. JSON because the messages are small (a generated token is one `Event` of a few dozen
//! bytes) and a frame can be read in a hex dump. Each side writes the frames that are ready
//! together (the runner: a decode step's text for every sequence) and reads them with one
//! buffered read, so a step of many sequences costs one system call each way.
//!
//! Every request that expects an answer carries an id chosen by whaled; the answer carries the
//! same id. A generation's events all carry its id, and its last event is `Done`, `Rejected` or
//! `Error`. whaled cancels a generation with `Cancel`; the runner then ends it at its next step.

use std::io::{self, Read};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::engine::{Embeddings, EngineError, Event, GenerateJob, Gpu, LoadParams, ModelInfo};

/// Largest frame either side accepts: room for the embeddings of a large batch of inputs.
pub const MAX_FRAME: u32 = 512 << 20;

/// whaled → runner.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Which GPUs the runner sees and how much of each is free (asked before loading, to plan
    /// where the layers go).
    Gpus {
        id: u64,
    },
    Load {
        id: u64,
        params: LoadParams,
    },
    Generate {
        id: u64,
        job: GenerateJob,
    },
    Cancel {
        id: u64,
    },
    Tokenize {
        id: u64,
        text: String,
        add_special: bool,
    },
    Detokenize {
        id: u64,
        tokens: Vec<i32>,
    },
    Embed {
        id: u64,
        inputs: Vec<String>,
        truncate: bool,
    },
    /// Finish: running generations end with `reason` as their error, then the process exits.
    Shutdown {
        reason: String,
    },
}

/// runner → whaled.
#[derive(Debug, Serialize, Deserialize)]
pub enum Message {
    Gpus {
        id: u64,
        gpus: Vec<Gpu>,
    },
    Loaded {
        id: u64,
        result: Result<ModelInfo, EngineError>,
    },
    Event {
        id: u64,
        event: Event,
    },
    Tokens {
        id: u64,
        result: Result<Vec<i32>, EngineError>,
    },
    Text {
        id: u64,
        result: Result<String, EngineError>,
    },
    Embeddings {
        id: u64,
        result: Result<Embeddings, EngineError>,
    },
}

impl Message {
    /// The same answer as an error, for when `self` cannot be sent (too large to encode).
    pub fn failed(&self, why: &str) -> Message {
        let error = EngineError::Llama(why.to_owned());
        match *self {
            Message::Gpus { id, .. } => Message::Gpus {
                id,
                gpus: Vec::new(),
            },
            Message::Loaded { id, .. } => Message::Loaded {
                id,
                result: Err(error),
            },
            Message::Event { id, .. } => Message::Event {
                id,
                event: Event::Error(why.to_owned()),
            },
            Message::Tokens { id, .. } => Message::Tokens {
                id,
                result: Err(error),
            },
            Message::Text { id, .. } => Message::Text {
                id,
                result: Err(error),
            },
            Message::Embeddings { id, .. } => Message::Embeddings {
                id,
                result: Err(error),
            },
        }
    }
}

/// Appends `message` as one frame to `buffer`; on error `buffer` is as it was.
pub fn encode<T: Serialize>(message: &T, buffer: &mut Vec<u8>) -> io::Result<()> {
    let start = buffer.len();
    buffer.extend_from_slice(&[0; 4]);
    let written = serde_json::to_writer(&mut *buffer, message).map_err(io::Error::other);
    let length = written.and_then(|()| {
        u32::try_from(buffer.len() - start - 4)
            .ok()
            .filter(|&length| length <= MAX_FRAME)
            .ok_or_else(|| io::Error::other("the answer is too large to send"))
    });
    match length {
        Ok(length) => {
            buffer[start..start + 4].copy_from_slice(&length.to_le_bytes());
            Ok(())
        }
        Err(error) => {
            buffer.truncate(start);
            Err(error)
        }
    }
}

/// Reads one frame; `None` at a clean end of the stream.
pub fn read<T: for<'de> Deserialize<'de>>(reader: &mut impl Read) -> io::Result<Option<T>> {
    let mut length = [0; 4];
    match reader.read_exact(&mut length) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let mut body = vec![0; checked_length(length)?];
    reader.read_exact(&mut body)?;
    decode(&body).map(Some)
}

/// Reads one frame from an async stream; `None` at a clean end of the stream.
pub async fn read_async<T: for<'de> Deserialize<'de>>(
    reader: &mut (impl AsyncRead + Unpin),
    body: &mut Vec<u8>,
) -> io::Result<Option<T>> {
    let mut length = [0; 4];
    match reader.read_exact(&mut length).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    body.resize(checked_length(length)?, 0);
    reader.read_exact(body).await?;
    decode(body).map(Some)
}

fn checked_length(length: [u8; 4]) -> io::Result<usize> {
    let length = u32::from_le_bytes(length);
    if length > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {length} bytes is over the limit of {MAX_FRAME}"),
        ));
    }
    Ok(length as usize)
}

fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    serde_json::from_slice(body).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{DoneReason, Summary};

    #[test]
    fn frames_round_trip_and_batch() {
        let mut buffer = Vec::new();
        encode(&Request::Cancel { id: 7 }, &mut buffer).unwrap();
        let done = Message::Event {
            id: 7,
            event: Event::Done(Summary {
                done_reason: DoneReason::Stop,
                prompt_eval_count: 3,
                prompt_eval_duration: std::time::Duration::from_millis(5),
                eval_count: 2,
                eval_duration: std::time::Duration::from_micros(1500),
                context: vec![1, 2, 3],
                draft_count: 0,
                draft_accepted_count: 0,
            }),
        };
        encode(&done, &mut buffer).unwrap();
        let mut reader = buffer.as_slice();
        assert!(matches!(
            read::<Request>(&mut reader).unwrap(),
            Some(Request::Cancel { id: 7 })
        ));
        match read::<Message>(&mut reader).unwrap() {
            Some(Message::Event {
                id: 7,
                event: Event::Done(summary),
            }) => assert_eq!(summary.context, vec![1, 2, 3]),
            other => panic!("{other:?}"),
        }
        assert!(read::<Message>(&mut reader).unwrap().is_none());
    }

    #[test]
    fn an_oversized_or_garbled_frame_is_an_error_not_a_panic() {
        let mut huge = (MAX_FRAME + 1).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert!(read::<Request>(&mut huge.as_slice()).is_err());
        let mut garbled = 3u32.to_le_bytes().to_vec();
        garbled.extend_from_slice(b"{{{");
        assert!(read::<Request>(&mut garbled.as_slice()).is_err());
        let cut = 10u32.to_le_bytes().to_vec();
        assert!(read::<Request>(&mut cut.as_slice()).is_err());
    }
}
