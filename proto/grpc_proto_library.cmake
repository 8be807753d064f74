# mamba_grpc_proto_library(<target> PROTO_ROOT <dir> PROTOS <paths relative to the root>...
#                          [NO_GRPC] [HEADERS_ONLY])
# Runs protoc (and the gRPC C++ plugin unless NO_GRPC) on each .proto into
# ${CMAKE_CURRENT_BINARY_DIR}/<target>_gen, keeping the path below the root, and makes <target>
# a static library of the generated code whose users include "<path>.pb.h" / ".grpc.pb.h".
# HEADERS_ONLY makes an INTERFACE library of the headers alone, for protos whose compiled code
# ships inside a library already (e.g. gRPC's reflection service in gRPC::grpc++_reflection).
# The caller's directory must have run find_package(Protobuf) and find_package(gRPC CONFIG).
include_guard(GLOBAL)

function(mamba_grpc_proto_library target)
  cmake_parse_arguments(P "NO_GRPC;HEADERS_ONLY" "PROTO_ROOT" "PROTOS" ${ARGN})
  set(out ${CMAKE_CURRENT_BINARY_DIR}/${target}_gen)
  file(MAKE_DIRECTORY ${out})
  set(sources "")
  set(headers "")
  foreach(proto IN LISTS P_PROTOS)
    string(REGEX REPLACE "\\.proto$" "" base "${proto}")
    set(outputs ${out}/${base}.pb.h ${out}/${base}.pb.cc)
    set(grpc_args "")
    set(deps ${P_PROTO_ROOT}/${proto} protobuf::protoc)
    if(NOT P_NO_GRPC)
      list(APPEND outputs ${out}/${base}.grpc.pb.h ${out}/${base}.grpc.pb.cc)
      set(grpc_args --grpc_out=${out} --plugin=protoc-gen-grpc=$<TARGET_FILE:gRPC::grpc_cpp_plugin>)
      list(APPEND deps gRPC::grpc_cpp_plugin)
    endif()
    add_custom_command(
      OUTPUT ${outputs}
      COMMAND protobuf::protoc --proto_path=${P_PROTO_ROOT} --cpp_out=${out} ${grpc_args}
              ${P_PROTO_ROOT}/${proto}
      DEPENDS ${deps}
      COMMENT "protoc ${proto}"
      VERBATIM)
    foreach(f IN LISTS outputs)
      if(f MATCHES "\\.cc$")
        list(APPEND sources ${f})
      else()
        list(APPEND headers ${f})
      endif()
    endforeach()
  endforeach()

  if(P_HEADERS_ONLY)
    add_custom_target(${target}_headers DEPENDS ${headers})
    add_library(${target} INTERFACE)
    add_dependencies(${target} ${target}_headers)
    target_include_directories(${target} INTERFACE ${out})
    target_link_libraries(${target} INTERFACE gRPC::grpc++ protobuf::libprotobuf)
  else()
    add_library(${target} STATIC ${sources} ${headers})
    target_include_directories(${target} PUBLIC ${out})
    target_link_libraries(${target} PUBLIC gRPC::grpc++ protobuf::libprotobuf)
    # Generated code is not ours to warn about.
    target_compile_options(${target} PRIVATE -w)
  endif()
endfunction()
