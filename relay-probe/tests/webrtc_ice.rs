//! The `webrtc` crate's ICE agent, relay-only, gathers a relayed candidate
//! from demarc-relay: the relay speaks what WebRTC stacks expect.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Relay;
use tokio::sync::mpsc;
use webrtc::peer_connection::{
    MediaEngine, PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler,
    RTCConfigurationBuilder, RTCIceCandidate, RTCIceCandidateType, RTCIceServer,
    RTCIceTransportPolicy, RTCPeerConnectionIceErrorEvent, RTCPeerConnectionIceEvent,
};

struct Candidates(mpsc::UnboundedSender<Result<RTCIceCandidate, String>>);

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Candidates {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        let _ = self.0.send(Ok(event.candidate));
    }

    async fn on_ice_candidate_error(&self, event: RTCPeerConnectionIceErrorEvent) {
        let _ = self.0.send(Err(format!("{event:?}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webrtc_agent_gathers_a_relayed_candidate() {
    let relay = Relay::start(&["--use-auth-secret", "--static-auth-secret", "s3cret"]);
    let username = format!(
        "{}:webrtc",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600
    );
    let credential = demarc_relay::auth::rest_password("s3cret", &username);

    let mut media = MediaEngine::default();
    media.register_default_codecs().unwrap();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(vec![RTCIceServer {
            urls: vec![format!("turn:127.0.0.1:{}?transport=udp", relay.port)],
            username,
            credential,
        }])
        .with_ice_transport_policy(RTCIceTransportPolicy::Relay)
        .build();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_handler(Arc::new(Candidates(tx)))
        .with_udp_addrs(vec!["127.0.0.1:0"])
        .build()
        .await
        .unwrap();
    pc.create_data_channel("probe", None).await.unwrap();
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer).await.unwrap();

    let candidate = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a candidate within 10 s")
        .expect("handler alive")
        .unwrap_or_else(|e| panic!("ICE candidate error: {e}"));
    assert_eq!(candidate.typ, RTCIceCandidateType::Relay, "{candidate:?}");
    assert_eq!(candidate.address, "127.0.0.1");
    assert!(
        (relay.range.0..=relay.range.1).contains(&candidate.port),
        "port {} outside the relay range {:?}",
        candidate.port,
        relay.range
    );
    pc.close().await.unwrap();
}
