//! etcd's Watch service: many watchers multiplexed over one bidirectional stream.
//!
//! The stream's reader task creates and cancels watchers; each watcher runs in its own task
//! that turns the store's [`Watcher`] into responses. Progress requests are answered only after
//! every watcher on the stream has confirmed it delivered everything up to the reported
//! revision, so a progress notification never overtakes an event it claims to cover.

use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use mvcc::KeyRange;
use mvcc::watch::WatchSpec;
use prost::Message;
use store_proto::etcdserverpb as pb;
use store_raft::{StoreError, StoreNode, Watcher};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status, Streaming};

use crate::convert;
use crate::kv::header;

/// The watch ID etcd uses for responses that concern the whole stream.
const STREAM_WIDE: i64 = -1;

/// The Watch service of one member.
pub struct WatchService {
    node: StoreNode,
    progress_interval: Duration,
    max_response_bytes: usize,
}

impl WatchService {
    /// A watch service; watchers that ask for progress notifications get one every
    /// `progress_interval` while idle; fragmenting watchers get responses of at most
    /// `max_response_bytes`.
    pub fn new(
        node: StoreNode,
        progress_interval: Duration,
        max_response_bytes: usize,
    ) -> WatchService {
        WatchService {
            node,
            progress_interval,
            max_response_bytes,
        }
    }
}

/// Responses are boxed because a channel allocates its first block of 32 slots up front:
/// 32 pointers per stream instead of 32 whole responses (about 4 KiB), which adds up over
/// thousands of watch streams.
type Out = mpsc::Sender<Box<pb::WatchResponse>>;
type ResponseStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::watch_server::Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<pb::WatchRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let (out, rx) = mpsc::channel(256);
        let stream = WatchStream {
            node: self.node.clone(),
            out,
            watchers: HashMap::new(),
            next_id: 0,
            progress_interval: self.progress_interval,
            max_response_bytes: self.max_response_bytes,
        };
        tokio::spawn(stream.run(request.into_inner()));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx).map(|response| Ok(*response)),
        )))
    }
}

struct WatchStream {
    node: StoreNode,
    out: Out,
    watchers: HashMap<i64, WatcherTask>,
    next_id: i64,
    progress_interval: Duration,
    max_response_bytes: usize,
}

struct WatcherTask {
    probes: mpsc::Sender<oneshot::Sender<i64>>,
    task: JoinHandle<()>,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        for (_, watcher) in self.watchers.drain() {
            watcher.task.abort();
        }
    }
}

impl WatchStream {
    async fn run(mut self, mut requests: Streaming<pb::WatchRequest>) {
        loop {
            let request = tokio::select! {
                request = requests.message() => request,
                () = self.out.closed() => return,
            };
            let request = match request {
                Ok(Some(request)) => request,
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!("watch stream ended: {status}");
                    return;
                }
            };
            self.watchers.retain(|_, w| !w.task.is_finished());
            use pb::watch_request::RequestUnion;
            let sent = match request.request_union {
                Some(RequestUnion::CreateRequest(create)) => self.create(create).await,
                Some(RequestUnion::CancelRequest(cancel)) => self.cancel(cancel.watch_id).await,
                Some(RequestUnion::ProgressRequest(_)) => {
                    self.progress();
                    true
                }
                None => true,
            };
            if !sent {
                return;
            }
        }
    }

    fn response(&self, watch_id: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: Some(header(&self.node, self.node.revision())),
            watch_id,
            ..Default::default()
        }
    }

    async fn send(&self, response: pb::WatchResponse) -> bool {
        self.out.send(Box::new(response)).await.is_ok()
    }

    async fn create(&mut self, create: pb::WatchCreateRequest) -> bool {
        let id = if create.watch_id != 0 {
            if self.watchers.contains_key(&create.watch_id) {
                return self
                    .send(pb::WatchResponse {
                        created: true,
                        canceled: true,
                        cancel_reason: "etcdserver: duplicate watch ID".into(),
                        ..self.response(create.watch_id)
                    })
                    .await;
            }
            create.watch_id
        } else {
            while self.watchers.contains_key(&self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        self.next_id = self.next_id.max(id + 1);
        if create.key.is_empty() && create.range_end.is_empty() {
            return self
                .send(pb::WatchResponse {
                    created: true,
                    canceled: true,
                    cancel_reason: "etcdserver: key is not provided".into(),
                    ..self.response(id)
                })
                .await;
        }
        let no_put = create
            .filters
            .contains(&(pb::watch_create_request::FilterType::Noput as i32));
        let no_delete = create
            .filters
            .contains(&(pb::watch_create_request::FilterType::Nodelete as i32));
        let spec = WatchSpec {
            range: KeyRange::new(&create.key, &create.range_end),
            start_revision: create.start_revision,
            prev_kv: create.prev_kv,
            no_put,
            no_delete,
        };
        let watcher = self.node.watch(spec);
        if !self
            .send(pb::WatchResponse {
                created: true,
                ..self.response(id)
            })
            .await
        {
            return false;
        }
        match watcher {
            Ok(watcher) => {
                let (probes, probe_rx) = mpsc::channel(16);
                let task = WatcherLoop {
                    id,
                    node: self.node.clone(),
                    out: self.out.clone(),
                    fragment: create.fragment,
                    progress: create.progress_notify.then_some(self.progress_interval),
                    max_response_bytes: self.max_response_bytes,
                };
                let task = tokio::spawn(task.run(watcher, probe_rx));
                self.watchers.insert(id, WatcherTask { probes, task });
                true
            }
            Err(error) => self.send(canceled(&self.node, id, error)).await,
        }
    }

    async fn cancel(&mut self, id: i64) -> bool {
        if let Some(watcher) = self.watchers.remove(&id) {
            watcher.task.abort();
            let _ = watcher.task.await;
        }
        self.send(pb::WatchResponse {
            canceled: true,
            ..self.response(id)
        })
        .await
    }

    /// Answers a progress request once every watcher confirmed what it has delivered.
    fn progress(&self) {
        let confirmations: Vec<oneshot::Receiver<i64>> = self
            .watchers
            .values()
            .filter_map(|w| {
                let (tx, rx) = oneshot::channel();
                w.probes.try_send(tx).ok().map(|()| rx)
            })
            .collect();
        let node = self.node.clone();
        let out = self.out.clone();
        tokio::spawn(async move {
            let mut revision = node.revision();
            for confirmation in confirmations {
                // A watcher that ended has nothing left to deliver.
                if let Ok(delivered) = confirmation.await {
                    revision = revision.min(delivered);
                }
            }
            let _ = out
                .send(Box::new(pb::WatchResponse {
                    header: Some(header(&node, revision)),
                    watch_id: STREAM_WIDE,
                    ..Default::default()
                }))
                .await;
        });
    }
}

fn canceled(node: &StoreNode, id: i64, error: StoreError) -> pb::WatchResponse {
    let compact_revision = match &error {
        StoreError::Mvcc(mvcc::Error::Compacted { compact_revision }) => *compact_revision,
        _ => 0,
    };
    pb::WatchResponse {
        header: Some(header(node, node.revision())),
        watch_id: id,
        canceled: true,
        compact_revision,
        cancel_reason: error.to_string(),
        ..Default::default()
    }
}

struct WatcherLoop {
    id: i64,
    node: StoreNode,
    out: Out,
    fragment: bool,
    progress: Option<Duration>,
    max_response_bytes: usize,
}

impl WatcherLoop {
    async fn run(self, mut watcher: Watcher, mut probe_rx: mpsc::Receiver<oneshot::Sender<i64>>) {
        let mut waiting: Vec<oneshot::Sender<i64>> = Vec::new();
        let mut ticker = tokio::time::interval(self.progress.unwrap_or(Duration::from_secs(3600)));
        ticker.tick().await;
        loop {
            tokio::select! {
                biased;
                probe = probe_rx.recv() => match probe {
                    Some(probe) => waiting.push(probe),
                    None => return,
                },
                batch = watcher.next() => match batch {
                    Ok(batch) => {
                        if !self.send_events(batch.events).await {
                            return;
                        }
                    }
                    Err(error) => {
                        let _ = self.out.send(Box::new(canceled(&self.node, self.id, error.into()))).await;
                        return;
                    }
                },
                _ = ticker.tick(), if self.progress.is_some() => {
                    if let Some(revision) = watcher.progress() {
                        let response = pb::WatchResponse {
                            header: Some(header(&self.node, revision)),
                            watch_id: self.id,
                            ..Default::default()
                        };
                        if self.out.send(Box::new(response)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if !waiting.is_empty()
                && let Some(revision) = watcher.progress()
            {
                for probe in waiting.drain(..) {
                    let _ = probe.send(revision);
                }
            }
        }
    }

    /// Sends events, split into fragments if the watcher asked for them and they are large.
    async fn send_events(&self, events: Vec<mvcc::Event>) -> bool {
        let Some(last) = events.last().map(mvcc::Event::revision) else {
            return true;
        };
        let events: Vec<_> = events.into_iter().map(convert::event).collect();
        let mut chunks: Vec<Vec<store_proto::mvccpb::Event>> = Vec::new();
        if self.fragment {
            let mut size = 0;
            let mut chunk = Vec::new();
            for event in events {
                let len = event.encoded_len();
                if !chunk.is_empty() && size + len > self.max_response_bytes {
                    chunks.push(std::mem::take(&mut chunk));
                    size = 0;
                }
                size += len;
                chunk.push(event);
            }
            chunks.push(chunk);
        } else {
            chunks.push(events);
        }
        let count = chunks.len();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let response = pb::WatchResponse {
                header: Some(header(&self.node, last)),
                watch_id: self.id,
                fragment: i + 1 < count,
                events: chunk,
                ..Default::default()
            };
            if self.out.send(Box::new(response)).await.is_err() {
                return false;
            }
        }
        true
    }
}
