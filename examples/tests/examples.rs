//! Every example runs, against its local mixnet, in the default test run.

#[allow(dead_code, reason = "the example's main is not called here")]
#[path = "../request_response.rs"]
mod request_response;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_response_gets_its_answer_anonymously() {
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), request_response::run())
        .await
        .expect("within a minute")
        .expect("the example runs");
    assert_eq!(answer, "42 is the value of \"answer\"");
}

#[allow(dead_code, reason = "the example's main is not called here")]
#[path = "../file_transfer.rs"]
mod file_transfer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_arrives_intact_over_a_mix_stream() {
    let file: Vec<u8> =
        (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let received = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        file_transfer::transfer(file.clone()),
    )
    .await
    .expect("within two minutes")
    .expect("the example runs");
    assert_eq!(received.len(), file.len());
    assert!(received == file, "the bytes differ");
}

#[allow(dead_code, reason = "the example's main is not called here")]
#[path = "../chat.rs"]
mod chat;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_participant_reads_every_line_of_the_chat() {
    let lines = ["one", "two", "three"];
    let read = tokio::time::timeout(std::time::Duration::from_secs(60), chat::chat(5, &lines))
        .await
        .expect("within a minute")
        .expect("the example runs");
    assert_eq!(read.len(), 4);
    for mut lines_read in read {
        lines_read.sort();
        assert_eq!(lines_read, ["one", "three", "two"]);
    }
}
