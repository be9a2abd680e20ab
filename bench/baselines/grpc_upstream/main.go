// Command grpc-upstream answers TF Serving's gRPC API at once with fixed bytes, standing in for
// a TF Serving that costs nothing (as bench/nginx/upstream.conf does over REST), so that what the
// benchmark measures in front of it is the proxy and not the model server.
//
// Requests are read as bytes and never decoded: Predict is answered with the bytes of
// -predict, ModelService.GetModelStatus with those of -status (the benchmark writes both from
// the project's own protos); any other method is UNIMPLEMENTED, as TF Serving says of a method
// it lacks.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rawCodec passes messages through as bytes: the upstream never decodes what it is sent.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("raw codec: cannot send %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("raw codec: cannot read into %T", v)
	}
	*b = data
	return nil
}

func (rawCodec) Name() string { return "proto" } // what callers send; read as bytes here

func main() {
	port := flag.Int("port", 0, "port on 127.0.0.1")
	predictFile := flag.String("predict", "", "the bytes of the PredictResponse answered")
	statusFile := flag.String("status", "", "the bytes of the GetModelStatusResponse answered")
	maxMessage := flag.Int("max-message-bytes", 64<<20, "largest message either way")
	flag.Parse()
	predict, err := os.ReadFile(*predictFile)
	if err != nil {
		log.Fatal(err)
	}
	modelStatus, err := os.ReadFile(*statusFile)
	if err != nil {
		log.Fatal(err)
	}
	answers := map[string][]byte{
		"/tensorflow.serving.PredictionService/Predict":   predict,
		"/tensorflow.serving.ModelService/GetModelStatus": modelStatus,
	}
	answer := func(_ any, stream grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(stream)
		var request []byte
		if err := stream.RecvMsg(&request); err != nil {
			return err
		}
		body, ok := answers[method]
		if !ok {
			return status.Errorf(codes.Unimplemented, "unknown method %s", method)
		}
		return stream.SendMsg(&body)
	}
	listener, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", *port))
	if err != nil {
		log.Fatal(err)
	}
	server := grpc.NewServer(
		grpc.ForceServerCodec(rawCodec{}),
		grpc.UnknownServiceHandler(answer),
		grpc.MaxRecvMsgSize(*maxMessage),
		grpc.MaxSendMsgSize(*maxMessage),
	)
	log.Fatal(server.Serve(listener))
}
