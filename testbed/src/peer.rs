//! Light WebRTC peers (the `webrtc` crate) in `a` and `b`: ICE relay-only
//! through the TURN server at the relay's public address with REST-API
//! credentials, each sending an audio-like stream, a video-like stream and
//! data-channel messages to the other for a given time.
//!
//! Each peer runs on its own thread inside its namespace, with its own tokio
//! runtime built there (setns is per thread, and the runtime's threads and
//! sockets inherit the namespace). Signalling is a pair of in-process
//! channels: the offer and the answer, each with every candidate gathered.
//!
//! webrtc 0.21.1 flushes a reply to relayed input only when its driver next
//! wakes (a timer, or the application's next write). Media timing is not
//! affected (every write wakes the driver), but a STUN response can wait for
//! the peer's next media write, so the passive ICE RTT between these peers
//! runs a few ms long; `docs/testbed.md` has the measured numbers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rtc::media_stream::MediaStreamTrack;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind,
};
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelState};
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::TrackLocal;
use webrtc::media_stream::track_remote::{TrackRemote, TrackRemoteEvent};
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCBundlePolicy, RTCConfigurationBuilder, RTCIceGatheringState,
    RTCIceServer, RTCIceTransportPolicy, RTCPeerConnectionState, RTCSessionDescription, Registry,
};

use crate::topology::{netns, Host, Topology};
use crate::{Error, Result};

/// Audio: one 160-byte frame every 20 ms (Opus-like, 50 pps).
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);
const AUDIO_PAYLOAD: usize = 160;
/// Video: 30 frames/s, each sent as a burst of RTP packets of at most
/// 1,200 bytes; a key frame (12 kB) every 3 s, else 3.6 kB.
const VIDEO_INTERVAL: Duration = Duration::from_micros(33_333);
const VIDEO_PACKET: usize = 1200;
const KEY_FRAME_EVERY: u64 = 90;
const KEY_FRAME_BYTES: usize = 12_000;
const DELTA_FRAME_BYTES: usize = 3_600;
/// A 100-byte data-channel message every 100 ms.
const DATA_INTERVAL: Duration = Duration::from_millis(100);
const DATA_MESSAGE: usize = 100;
/// What the peers wait after sending for the last packets to arrive.
const DRAIN: Duration = Duration::from_secs(1);

/// The TURN server and how long to talk.
#[derive(Debug, Clone)]
pub struct CallOptions {
    /// TURN over UDP at the relay's public address.
    pub turn: SocketAddr,
    /// The relay's `static-auth-secret`.
    pub secret: String,
    /// How long each peer sends media once connected.
    pub duration: Duration,
    /// ICE and DTLS must be done within this.
    pub connect_timeout: Duration,
    /// Set to end the call early (the demo's Ctrl-C).
    pub stop: Arc<AtomicBool>,
}

/// Packets (or messages) per stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Traffic {
    pub audio: u64,
    pub video: u64,
    pub data: u64,
}

/// What one peer did.
#[derive(Debug, Clone)]
pub struct PeerReport {
    pub host: Host,
    /// From creating the connection to `connected` (ICE and DTLS done).
    pub connected_after: Duration,
    pub sent: Traffic,
    pub received: Traffic,
}

/// Runs `n` calls at once between `a` (offerers) and `b` (answerers);
/// returns every peer's report, or the first failure.
pub fn calls(topology: &Topology, options: &CallOptions, n: usize) -> Result<Vec<PeerReport>> {
    let spawn = |host: Host, call: usize, signal: Signal| {
        let ns = topology.netns(host);
        let options = options.clone();
        std::thread::Builder::new()
            .name(format!("peer-{host}{call}"))
            .spawn(move || -> Result<PeerReport> {
                netns::enter(&ns)?;
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .map_err(Error::io(format!("starting the runtime of peer {host}")))?;
                runtime
                    .block_on(peer(host, call, signal, &options))
                    .map_err(|message| Error::Peer { host, message })
            })
            .map_err(Error::io(format!("starting peer {host}")))
    };
    let mut threads = Vec::new();
    for call in 0..n {
        let (offer_tx, offer_rx) = oneshot::channel();
        let (answer_tx, answer_rx) = oneshot::channel();
        let offer = Signal::Offer {
            offer: offer_tx,
            answer: answer_rx,
        };
        let answer = Signal::Answer {
            offer: offer_rx,
            answer: answer_tx,
        };
        threads.push(spawn(Host::A, call, offer)?);
        threads.push(spawn(Host::B, call, answer)?);
    }
    // Every thread is joined before the first failure is returned.
    let results: Vec<Result<PeerReport>> = threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
        .collect();
    results.into_iter().collect()
}

/// One side of the in-process signalling channel.
enum Signal {
    Offer {
        offer: oneshot::Sender<RTCSessionDescription>,
        answer: oneshot::Receiver<RTCSessionDescription>,
    },
    Answer {
        offer: oneshot::Receiver<RTCSessionDescription>,
        answer: oneshot::Sender<RTCSessionDescription>,
    },
}

const GONE: &str = "the other peer stopped before signalling finished";

#[derive(Default)]
struct Counters {
    audio: AtomicU64,
    video: AtomicU64,
    data: AtomicU64,
}

impl Counters {
    fn get(&self) -> Traffic {
        Traffic {
            audio: self.audio.load(Ordering::Relaxed),
            video: self.video.load(Ordering::Relaxed),
            data: self.data.load(Ordering::Relaxed),
        }
    }
}

/// Connection events, turned into state the peer task can wait on.
struct Events {
    state: watch::Sender<RTCPeerConnectionState>,
    gathered: watch::Sender<bool>,
    data_channel: mpsc::UnboundedSender<Arc<dyn DataChannel>>,
    received: Arc<Counters>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Events {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        self.gathered
            .send_replace(state == RTCIceGatheringState::Complete);
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        self.state.send_replace(state);
    }

    async fn on_data_channel(&self, channel: Arc<dyn DataChannel>) {
        let _ = self.data_channel.send(channel);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let received = self.received.clone();
        tokio::spawn(async move {
            let kind = track.kind().await;
            while let Some(event) = track.poll().await {
                match event {
                    TrackRemoteEvent::OnRtpPacket(_) if kind == RtpCodecKind::Audio => {
                        received.audio.fetch_add(1, Ordering::Relaxed);
                    }
                    TrackRemoteEvent::OnRtpPacket(_) => {
                        received.video.fetch_add(1, Ordering::Relaxed);
                    }
                    TrackRemoteEvent::OnEnded => break,
                    _ => {}
                }
            }
        });
    }
}

async fn peer(
    host: Host,
    call: usize,
    signal: Signal,
    options: &CallOptions,
) -> Result<PeerReport, String> {
    let started = Instant::now();
    let mut media = MediaEngine::default();
    media
        .register_default_codecs()
        .map_err(|e| format!("codecs: {e}"))?;
    // The default interceptors send RTCP reports and NACKs, as real peers do.
    let registry = register_default_interceptors(Registry::new(), &mut media)
        .map_err(|e| format!("interceptors: {e}"))?;
    let (username, credential) = rest_credentials(&options.secret, &format!("{host}{call}"));
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(vec![RTCIceServer {
            urls: vec![format!("turn:{}?transport=udp", options.turn)],
            username,
            credential,
        }])
        .with_ice_transport_policy(RTCIceTransportPolicy::Relay)
        .with_bundle_policy(RTCBundlePolicy::MaxBundle)
        .build();
    let (state_tx, mut state) = watch::channel(RTCPeerConnectionState::New);
    let (gathered_tx, mut gathered) = watch::channel(false);
    let (channel_tx, mut channels) = mpsc::unbounded_channel();
    let received = Arc::new(Counters::default());
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(Arc::new(Events {
            state: state_tx,
            gathered: gathered_tx,
            data_channel: channel_tx,
            received: received.clone(),
        }))
        .with_udp_addrs(vec![SocketAddr::from((host.address(), 0))])
        .build()
        .await
        .map_err(|e| format!("creating the peer connection: {e}"))?;
    let audio = track(&pc, RtpCodecKind::Audio, host, call).await?;
    let video = track(&pc, RtpCodecKind::Video, host, call).await?;

    let signalling = async {
        match signal {
            Signal::Offer { offer, answer } => {
                let channel = pc
                    .create_data_channel("data", None)
                    .await
                    .map_err(|e| format!("data channel: {e}"))?;
                let local = pc.create_offer(None).await.map_err(|e| e.to_string())?;
                pc.set_local_description(local)
                    .await
                    .map_err(|e| e.to_string())?;
                offer
                    .send(gather(&mut gathered, &pc).await?)
                    .map_err(|_| GONE)?;
                let remote = answer.await.map_err(|_| GONE)?;
                pc.set_remote_description(remote)
                    .await
                    .map_err(|e| format!("the answer: {e}"))?;
                Ok::<_, String>(Some(channel))
            }
            Signal::Answer { offer, answer } => {
                let remote = offer.await.map_err(|_| GONE)?;
                pc.set_remote_description(remote)
                    .await
                    .map_err(|e| format!("the offer: {e}"))?;
                let local = pc.create_answer(None).await.map_err(|e| e.to_string())?;
                pc.set_local_description(local)
                    .await
                    .map_err(|e| e.to_string())?;
                answer
                    .send(gather(&mut gathered, &pc).await?)
                    .map_err(|_| GONE)?;
                Ok(None)
            }
        }
    };
    // Gathering waits for the TURN allocation, which never comes when the
    // relay is unreachable.
    let created = tokio::time::timeout(options.connect_timeout, signalling)
        .await
        .map_err(|_| {
            format!(
                "no relayed candidate from {} within {:?}: is the relay reachable?",
                options.turn, options.connect_timeout
            )
        })??;
    let connected = tokio::time::timeout(
        options.connect_timeout,
        state.wait_for(|s| {
            matches!(
                s,
                RTCPeerConnectionState::Connected | RTCPeerConnectionState::Failed
            )
        }),
    )
    .await;
    let reached = connected.ok().and_then(|r| r.ok()).map(|s| *s);
    let reached = reached.unwrap_or_else(|| *state.borrow());
    if reached != RTCPeerConnectionState::Connected {
        let _ = pc.close().await;
        return Err(format!(
            "ICE/DTLS through the relay at {} did not connect within {:?} (state {reached})",
            options.turn, options.connect_timeout
        ));
    }
    let connected_after = started.elapsed();
    let channel = match created {
        Some(channel) => channel,
        None => tokio::time::timeout(options.connect_timeout, channels.recv())
            .await
            .ok()
            .flatten()
            .ok_or("no data channel from the offerer")?,
    };

    let until = tokio::time::Instant::now() + options.duration;
    let stop = &options.stop;
    let (a, v, d) = tokio::join!(
        send_audio(&audio, until, stop),
        send_video(&video, until, stop),
        data(&*channel, until, stop, &received),
    );
    let _ = pc.close().await;
    Ok(PeerReport {
        host,
        connected_after,
        sent: Traffic {
            audio: a?,
            video: v?,
            data: d?,
        },
        received: received.get(),
    })
}

/// Non-trickle signalling: the description once every candidate is in it.
async fn gather(
    gathered: &mut watch::Receiver<bool>,
    pc: &impl PeerConnection,
) -> Result<RTCSessionDescription, String> {
    gathered
        .wait_for(|done| *done)
        .await
        .map_err(|_| "gathering stopped".to_owned())?;
    pc.local_description()
        .await
        .ok_or_else(|| "no local description".to_owned())
}

/// coturn's REST-API credentials: `expiry:name` and its HMAC under the secret.
pub fn rest_credentials(secret: &str, name: &str) -> (String, String) {
    let expiry = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        + 24 * 3600;
    let username = format!("{expiry}:{name}");
    let password = demarc_relay::auth::rest_password(secret, &username);
    (username, password)
}

async fn track(
    pc: &impl PeerConnection,
    kind: RtpCodecKind,
    host: Host,
    call: usize,
) -> Result<Outgoing, String> {
    // Payload types as `register_default_codecs` numbers them.
    let (mime, clock_rate, channels, payload_type) = match kind {
        RtpCodecKind::Audio => ("audio/opus", 48_000, 2, 111),
        _ => ("video/VP8", 90_000, 0, 96),
    };
    let ssrc = u32::from_be_bytes(host.address().octets()) ^ clock_rate ^ (call as u32) << 24;
    let track = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        format!("{host}-stream"),
        format!("{host}-{kind}"),
        format!("{host} {kind}"),
        kind,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(ssrc),
                ..Default::default()
            },
            codec: RTCRtpCodec {
                mime_type: mime.to_owned(),
                clock_rate,
                channels,
                sdp_fmtp_line: String::new(),
                rtcp_feedback: vec![],
            },
            ..Default::default()
        }],
    )));
    pc.add_track(track.clone() as Arc<dyn TrackLocal>)
        .await
        .map_err(|e| format!("adding the {kind} track: {e}"))?;
    Ok(Outgoing {
        track,
        ssrc,
        payload_type,
    })
}

/// A track we send on; the sender checks that each packet carries its SSRC
/// and a negotiated payload type.
struct Outgoing {
    track: Arc<TrackLocalStaticRTP>,
    ssrc: u32,
    payload_type: u8,
}

impl Outgoing {
    async fn send(&self, seq: u64, timestamp: u32, marker: bool, len: usize) -> Result<(), String> {
        let packet = rtp::Packet {
            header: rtp::header::Header {
                version: 2,
                marker,
                sequence_number: seq as u16,
                timestamp,
                ssrc: self.ssrc,
                payload_type: self.payload_type,
                ..Default::default()
            },
            payload: Bytes::from(vec![0x90; len]),
        };
        self.track
            .write_rtp(packet)
            .await
            .map_err(|e| format!("sending RTP: {e}"))
    }
}

fn interval(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    // After a stall (steal), carry on at the rate rather than bursting to catch up.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

async fn send_audio(
    track: &Outgoing,
    until: tokio::time::Instant,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let mut tick = interval(AUDIO_INTERVAL);
    let mut sent = 0u64;
    while tick.tick().await < until && !stop.load(Ordering::Relaxed) {
        let timestamp = (sent as u32).wrapping_mul(960);
        track.send(sent, timestamp, false, AUDIO_PAYLOAD).await?;
        sent += 1;
    }
    Ok(sent)
}

async fn send_video(
    track: &Outgoing,
    until: tokio::time::Instant,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let mut tick = interval(VIDEO_INTERVAL);
    let (mut frame, mut sent) = (0u64, 0u64);
    while tick.tick().await < until && !stop.load(Ordering::Relaxed) {
        let mut left = if frame % KEY_FRAME_EVERY == 0 {
            KEY_FRAME_BYTES
        } else {
            DELTA_FRAME_BYTES
        };
        // The whole frame at once: the burst a video encoder hands the network.
        while left > 0 {
            let len = left.min(VIDEO_PACKET);
            left -= len;
            let timestamp = (frame as u32).wrapping_mul(3000);
            track.send(sent, timestamp, left == 0, len).await?;
            sent += 1;
        }
        frame += 1;
    }
    Ok(sent)
}

/// Sends a message every [`DATA_INTERVAL`] until `until` and counts what
/// arrives; returns how many were sent.
async fn data(
    channel: &dyn DataChannel,
    until: tokio::time::Instant,
    stop: &AtomicBool,
    received: &Counters,
) -> Result<u64, String> {
    let mut tick = interval(DATA_INTERVAL);
    let mut sent = 0u64;
    let mut sending = true;
    let deadline = tokio::time::sleep_until(until + DRAIN);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = channel.poll() => match event {
                Some(DataChannelEvent::OnMessage(_)) => {
                    received.data.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
                None => break,
            },
            at = tick.tick(), if sending => {
                if at >= until || stop.load(Ordering::Relaxed) {
                    // Receive what is still on its way, then end.
                    sending = false;
                    deadline.as_mut().reset(at + DRAIN);
                    continue;
                }
                // The offerer's channel opens a moment after DTLS connects.
                let open = channel.ready_state().await.ok() == Some(RTCDataChannelState::Open);
                if open {
                    channel
                        .send(BytesMut::from(&[0x42u8; DATA_MESSAGE][..]))
                        .await
                        .map_err(|e| format!("sending on the data channel: {e}"))?;
                    sent += 1;
                }
            }
            _ = &mut deadline => break,
        }
    }
    Ok(sent)
}
